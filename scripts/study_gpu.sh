#!/usr/bin/env bash
# A replicate study on one offline GPU machine: train pairs, sweep them, pack what comes back.
#
#   scripts/study_gpu.sh check                        GPU kernel tests (bf16 tolerances, deterministic backward)
#   scripts/study_gpu.sh wheels DIR                   install a wheelhouse (lm-eval, hqq, bitsandbytes) into $SITE
#   scripts/study_gpu.sh corpus TEXT_DIR...           token shards of the recipe's text, into $WORK/corpus
#   scripts/study_gpu.sh smoke SEED                   a short training twice at SEED: both sides bit-identical?
#   scripts/study_gpu.sh train SEED[:NAME] ...        train the recipe at each seed, all at once, detached
#   scripts/study_gpu.sh sweep CONFIG SEED            sweep one seed's checkpoints of CONFIG in $SHARDS shards, detached
#   scripts/study_gpu.sh wait [SECONDS]               wait for the detached jobs (default 540 s); print progress
#   scripts/study_gpu.sh collect OUT                  pack records, logs and training summaries into OUT
#
# Text folders hold *.txt, *.txt.gz or *.txt.xz files (scripts/pack_text_for_device.sh builds a
# small xz copy of the demo recipe's text). Training writes $WORK/$STUDY/train-s<SEED>/ (or
# train-<NAME>/), where the study config's pairs point. Everything runs from a snapshot of this
# checkout in $WORK, so that editing the checkout cannot change a running study; `train` and
# `sweep` return at once and keep running in their own process session.
# Environment: WORK (/tmp/softpick-study), STUDY (runs/demo-study-v2), RECIPE (configs/train/demo.yaml),
# SHARDS (8), SITE ($WORK/site: where `wheels` installs), TRAIN_LIMIT (safety stop per training, 1500 s),
# VAL_FILE (the held-out text file among the corpus folders, part-003.txt.xz), TEST_WORKERS (8: pytest-xdist
# processes for `check`).
set -uo pipefail
export PYTHONUNBUFFERED=1
WORK=${WORK:-/tmp/softpick-study}
STUDY=${STUDY:-runs/demo-study-v2}
RECIPE=${RECIPE:-configs/train/demo.yaml}
SHARDS=${SHARDS:-8}
SITE=${SITE:-$WORK/site}
JOBS=$WORK/jobs
LOGS=$WORK/$STUDY/logs

snapshot() {  # copy the checkout once; later commands run there
  [ -d "$WORK/softpick_bench" ] && return 0
  mkdir -p "$WORK" && tar cf - --exclude=./.git --exclude=./.carry --exclude=./.whl-gpu --exclude=./runs . \
    | tar xf - -C "$WORK" || return 1
}

enter() {
  snapshot || exit 1
  mkdir -p "$JOBS" "$LOGS" && cd "$WORK" || exit 1
  export PYTHONPATH=$WORK${SITE:+:$SITE}
}

detach() {  # detach NAME SUBCOMMAND ARGS...: this script's SUBCOMMAND in a new process session
  local name=$1; shift
  setsid bash "$WORK/scripts/study_gpu.sh" "$@" > "$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$JOBS/$name.pid"
}

train_cmd() {  # train_cmd FOLDER SEED [extra args]
  local folder=$1 seed=$2; shift 2
  python3 -m softpick_bench.train.command --config "$RECIPE" --out "$folder" --data "$WORK/corpus" \
    --set seed="$seed" --time-limit "${TRAIN_LIMIT:-1500}" "$@"
}

progress() {
  echo "--- $(date +%T)"
  for pidfile in "$JOBS"/*.pid; do
    [ -f "$pidfile" ] || continue
    local name; name=$(basename "$pidfile" .pid)
    local state=done; kill -0 "$(cat "$pidfile")" 2>/dev/null && state=running
    echo "$name [$state]: $(grep -a -E '^(step|\[)' "$LOGS/$name.log" 2>/dev/null | tail -n 1 | cut -c1-160)"
  done
  local cells=$WORK/$STUDY/sweep/cells
  if [ -d "$cells" ]; then
    echo "records: $(ls "$cells" | grep -c '[0-9a-f]\.json$') ok, $(ls "$cells" | grep -c 'error\.json$') error"
  fi
  return 0
}

running() {
  for pidfile in "$JOBS"/*.pid; do [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && return 0; done
  return 1
}

seed_config() {  # seed_config CONFIG SEED: CONFIG with only that seed's checkpoints, beside CONFIG
  python3 - "$1" "$2" <<'PY'
import sys
from pathlib import Path
import yaml
path, seed = Path(sys.argv[1]), sys.argv[2]
config = yaml.safe_load(path.read_text())
for pair in config["pairs"]:
    for kind in ("softmax", "softpick"):
        paths = pair[kind] if isinstance(pair[kind], list) else [pair[kind]]
        pair[kind] = [p for p in paths if f"/train-s{seed}/" in p]
        if not pair[kind]:
            sys.exit(f"{path}: no {kind} checkpoint of seed {seed} (paths with /train-s{seed}/)")
out = path.with_name(f"{path.stem}-s{seed}.yaml")
out.write_text(yaml.safe_dump(config, sort_keys=False))
print(out)
PY
}

case "${1:-}" in
  check)
    enter
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -m pytest tests/gpu -q -p no:cacheprovider -n "${TEST_WORKERS:-8}" 2>&1 | tail -n 25
    ;;
  wheels)
    [ -d "${2:-}" ] || { echo "usage: $0 wheels DIR (a folder of .whl files)"; exit 2; }
    src=$(cd "$2" && pwd); enter
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$src"/*.whl \
      && echo "installed $(ls "$src"/*.whl | wc -l) wheels into $SITE"
    ;;
  corpus)
    shift; srcs=()
    for d in "$@"; do [ -d "$d" ] || { echo "usage: $0 corpus TEXT_DIR... ($d is no folder)"; exit 2; }; srcs+=(--src "$(cd "$d" && pwd)"); done
    [ ${#srcs[@]} -gt 0 ] || { echo "usage: $0 corpus TEXT_DIR..."; exit 2; }
    enter
    python3 scripts/prepare_corpus.py "${srcs[@]}" --out "$WORK/corpus" --val-file "${VAL_FILE:-part-003.txt.xz}" \
      --max-val-tokens 500000
    ;;
  smoke)
    seed=${2:?usage: $0 smoke SEED}; enter
    for copy in a b; do train_cmd "$WORK/smoke/$copy" "$seed" --steps 40 > "$LOGS/smoke-$copy.log" 2>&1 & done
    wait
    grep -h "attention backend" "$LOGS"/smoke-a.log
    python3 -m softpick_bench.train.reproduce "$WORK/smoke/a" "$WORK/smoke/b"
    ;;
  train)
    shift; [ $# -ge 1 ] || { echo "usage: $0 train SEED[:NAME] ..."; exit 2; }
    enter
    for spec in "$@"; do
      seed=${spec%%:*}; name=s$seed; [ "$spec" != "$seed" ] && name=${spec#*:}
      detach "train-$name" _train "$WORK/$STUDY/train-$name" "$seed"
    done
    progress
    ;;
  sweep)
    config=${2:?usage: $0 sweep CONFIG SEED}; seed=${3:?usage: $0 sweep CONFIG SEED}; enter
    one=$(seed_config "$config" "$seed") || exit 1
    for ((i = 0; i < SHARDS; i++)); do
      detach "sweep-s$seed-$i" _sweep "$one" "$i"
    done
    progress
    ;;
  wait)
    enter; limit=${2:-540}; start=$SECONDS
    while running && [ $((SECONDS - start)) -lt "$limit" ]; do sleep 10; done
    progress
    running && echo "still running after ${limit} s"
    ;;
  collect)
    out=${2:?usage: $0 collect OUT}; mkdir -p "$out"; out=$(cd "$out" && pwd); enter
    cd "$WORK/$STUDY" || exit 1
    tar czf "$out/records.tar.gz" --exclude='*.items.json.gz' --exclude=requests --exclude='*.safetensors' \
      --exclude='tokenizer*' $(ls -d sweep train-* logs 2>/dev/null)
    items=$(ls sweep/cells/*.items.json.gz 2>/dev/null | wc -l)
    [ "$items" -gt 0 ] && tar cf - sweep/cells/*.items.json.gz | split -b 15M - "$out/items.tar.part-"
    ls -la "$out"
    ;;
  _train) enter; train_cmd "$2" "$3" --analysis ;;
  _sweep)
    enter
    OMP_NUM_THREADS=2 python3 -m softpick_bench.cli sweep "$2" --out "$WORK/$STUDY/sweep" --shard "$3/$SHARDS"
    ;;
  *)
    sed -n '2,19p' "$0"; exit 2 ;;
esac
