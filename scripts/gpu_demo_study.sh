#!/usr/bin/env bash
# The demo study on one H200, in three device calls issued back to back (the machine keeps files
# between calls while it stays warm; a detached driver keeps working between them):
#   1. run(carry=[.carry/text], command="bash scripts/gpu_demo_study.sh start")
#      copies the working tree to /tmp/sb (a later call re-copies the working tree, which must not
#      change files under a running sweep), builds the token shards from the carried text and
#      starts the driver there:
#        a. trains the seed-4321 pair alone on the GPU;
#        b. trains the seed-1234 pair while 8 sweep shards run seed 4321's matrix
#           (configs/demo-study.yaml restricted to that seed), then the rest of the tiny-pair grid;
#        c. sweeps seed 1234's matrix the same way;
#        d. runs the whole config once more (every cell is done by then: it writes plan.json and
#           retries any failed cell), then the report.
#   2. run(carry=[.whl-gpu], command="bash scripts/gpu_demo_study.sh wheels")
#      installs the GPU wheelhouse (lm-eval, hqq, bitsandbytes: the text and the wheels do not fit
#      one call's 64 MiB together) and waits for the driver.
#   3. run(command="WAIT=... bash scripts/gpu_demo_study.sh collect")
#      waits for the driver until WAIT seconds pass, then packs what exists (never checkpoints,
#      except the chosen tiny pair's, at most 8 MB each) into $OUT, finished or not.
# Every call returns within WAIT seconds (default 540) and prints the driver's progress.
# Carry limit: this ran on 2026-12-02 with a 27 MB working tree beside .carry/text (38.7 MB). The
# tree is 32 MB since (the study's results, the new micro pair), so the two no longer fit one call's
# 64 MiB: split .carry/text over two calls (a path a later call does not name stays on the machine).
set -uo pipefail
export PYTHONUNBUFFERED=1
SB=/tmp/sb
STUDY=$SB/runs/demo-study
LOGS=$STUDY/logs
SITE=/tmp/site
WAIT=${WAIT:-540}
SHARDS=${SHARDS:-8}
SEEDS=(4321 1234)
# the small-pair grid: the rows of configs/train/grids/tiny-sinks.txt (base micro-v1.yaml) that have
# no committed result under results/training/tiny-grid/ yet
GRID=configs/train/grids/tiny-sinks.txt

progress() {
  echo "--- $(date +%T) driver: $(cat $STUDY/phase 2>/dev/null || echo none)"
  for f in "$LOGS"/train-*.log; do [ -f "$f" ] && echo "$(basename "$f"): $(grep -a 'step' "$f" | tail -n 1 | cut -c1-150)"; done
  for f in "$LOGS"/sweep-*.log; do [ -f "$f" ] && echo "$(basename "$f"): $(grep -a '^\[' "$f" | tail -n 1 | cut -c1-150)"; done
  echo "records: $(ls $STUDY/sweep/cells 2>/dev/null | grep -c '[0-9a-f]\.json$') ok, $(ls $STUDY/sweep/cells 2>/dev/null | grep -c 'error\.json$') error"
}

wait_for() {  # wait until the driver reaches phase $1 (or WAIT seconds pass)
  local start=$SECONDS
  while [ $((SECONDS - start)) -lt "$WAIT" ]; do
    grep -qx "$1" "$STUDY/phase" 2>/dev/null && return 0
    grep -qx failed "$STUDY/phase" 2>/dev/null && return 1
    sleep 10
  done
  return 1
}

train() {  # train SEED: the demo pair at that seed
  python3 -m softpick_bench.train.command --config configs/train/demo.yaml --out "$STUDY/train-s$1" \
    --data /tmp/corpus --set seed=$1 --time-limit 900 --analysis > "$LOGS/train-s$1.log" 2>&1
}

seed_config() {  # configs/demo-study.yaml with only seed $1's checkpoints (paths stay relative to configs/)
  python3 - "$1" <<'PY'
import sys, yaml
seed = sys.argv[1]
config = yaml.safe_load(open("configs/demo-study.yaml"))
for pair in config["pairs"]:
    for kind in ("softmax", "softpick"):
        pair[kind] = [p for p in pair[kind] if f"train-s{seed}/" in p]
yaml.safe_dump(config, open(f"configs/demo-study-s{seed}.yaml", "w"), sort_keys=False)
PY
}

sweep_seed() {  # SHARDS sweep processes over seed $1's cells, into one folder
  seed_config "$1" || return 1
  local pids=()
  for ((i = 0; i < SHARDS; i++)); do
    OMP_NUM_THREADS=2 python3 -m softpick_bench.cli sweep "configs/demo-study-s$1.yaml" --out $STUDY/sweep \
      --shard $i/$SHARDS > "$LOGS/sweep-s$1-$i.log" 2>&1 &
    pids+=($!)
  done
  wait "${pids[@]}"  # these shards only: the other seed's training runs on meanwhile
}

tiny_grid() {
  mapfile -t VARIANTS < <(grep -v '^\s*#' "$GRID" | grep -v '^\s*$')
  for v in "${VARIANTS[@]}"; do
    name=${v%%|*}; sets=(); for o in ${v#*|}; do sets+=(--set "$o"); done
    [ -d "results/training/tiny-grid/$name" ] && continue  # ran in an earlier session
    python3 -m softpick_bench.train.command --config configs/train/micro-v1.yaml --out "$STUDY/tiny/$name" \
      --data /tmp/corpus --time-limit 420 --analysis "${sets[@]}" > "$LOGS/train-tiny-$name.log" 2>&1 &
  done
  wait
  python3 -m softpick_bench.train.table2 --grid "$STUDY/tiny" > "$STUDY/tiny/grid.md" 2>&1
}

driver() {
  cd $SB || return 1
  export PYTHONPATH=$SB
  echo "training s${SEEDS[0]}" > $STUDY/phase
  train "${SEEDS[0]}" || return 1
  ( train "${SEEDS[1]}" ) &
  local second=$!
  echo waiting-for-wheels > $STUDY/phase
  while [ ! -f $SITE/.ready ]; do sleep 5; done
  export PYTHONPATH=$SB:$SITE
  echo "sweeping s${SEEDS[0]}, training s${SEEDS[1]}" > $STUDY/phase
  sweep_seed "${SEEDS[0]}"
  ( tiny_grid ) &
  local tiny=$!
  wait $second || return 1
  echo "sweeping s${SEEDS[1]}" > $STUDY/phase
  sweep_seed "${SEEDS[1]}"
  echo "whole config" > $STUDY/phase
  python3 -m softpick_bench.cli sweep configs/demo-study.yaml --out $STUDY/sweep > "$LOGS/sweep-all.log" 2>&1
  wait $tiny
  echo done > $STUDY/phase
}

case "${1:-}" in
  start)
    nvidia-smi -L
    mkdir -p $SB && cp -a . $SB/ && rm -rf $SB/.carry && mkdir -p "$LOGS" || exit 1
    PYTHONPATH=$SB python3 scripts/prepare_corpus.py --src .carry/text --out /tmp/corpus --val-file part-003.txt.xz \
      --max-val-tokens 500000 || exit 1
    setsid bash "$0" driver > /tmp/driver.log 2>&1 < /dev/null &
    wait_for waiting-for-wheels
    progress
    ;;
  driver)
    driver || echo failed > $STUDY/phase
    ;;
  wait)
    wait_for done
    progress
    ;;
  wheels)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $SITE .whl-gpu/*.whl \
      && touch $SITE/.ready
    wait_for done
    progress
    ;;
  collect)
    wait_for done
    progress
    cd $SB || exit 1
    tar czf "$OUT/study-records.tar.gz" --exclude='*.items.json.gz' --exclude='requests' \
      --exclude='model.safetensors' "runs/demo-study/sweep" runs/demo-study/train-s* "runs/demo-study/tiny" \
      "runs/demo-study/logs" runs/demo-study/phase /tmp/driver.log 2>/dev/null
    tar cf - runs/demo-study/sweep/cells/*.items.json.gz 2>/dev/null | split -b 15M - "$OUT/study-items.tar.part-"
    TINY=${TINY:-$(python3 scripts/pick_tiny_pair.py runs/demo-study/tiny)}
    [ -n "$TINY" ] && tar cf "$OUT/tiny-pair.tar" -C "runs/demo-study/tiny/$TINY" softmax softpick
    ls -la "$OUT"; cat runs/demo-study/tiny/grid.md; tail -n 30 runs/demo-study/logs/sweep-all.log 2>/dev/null
    ;;
  *) echo "usage: $0 start|wheels|wait|collect"; exit 2 ;;
esac
