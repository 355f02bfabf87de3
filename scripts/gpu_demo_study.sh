#!/usr/bin/env bash
# The demo study on one H200, in three device calls issued back to back (the machine keeps files
# between calls while it stays warm; a background driver keeps working between them):
#   1. run(carry=[.carry/text], command="bash scripts/gpu_demo_study.sh start")
#      builds the token shards from the carried text, then starts (detached) the driver: the demo
#      pair at seeds 4321 and 1234 and the tiny-pair grid (configs/train/grids/tiny-sinks.txt),
#      all training at once on the one GPU; then, once the wheels are there, four sweep shards of
#      configs/demo-study.yaml into runs/demo-study/sweep; then the report.
#   2. run(carry=[.whl-gpu], command="bash scripts/gpu_demo_study.sh wheels")
#      installs the GPU wheelhouse (lm-eval, hqq, bitsandbytes: the text and the wheels do not fit
#      one call's 64 MiB together) and waits for the driver.
#   3. run(command="bash scripts/gpu_demo_study.sh collect")  (again if the driver is not done)
#      waits for the driver, then packs results (never checkpoints, except the chosen tiny pair's,
#      at most 8 MB each) into $OUT.
# Every call returns within WAIT seconds (default 540) and prints the driver's progress.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$(pwd)
ROOT=$(pwd)
STUDY=runs/demo-study
LOGS=$STUDY/logs
SITE=/tmp/site
WAIT=${WAIT:-540}
mkdir -p "$LOGS"

progress() {
  echo "--- $(date +%T) driver: $(cat $STUDY/phase 2>/dev/null || echo none)"
  for f in "$LOGS"/train-*.log; do [ -f "$f" ] && echo "$(basename "$f"): $(grep -a 'step' "$f" | tail -n 1 | cut -c1-150)"; done
  for f in "$LOGS"/sweep-*.log; do [ -f "$f" ] && echo "$(basename "$f"): $(grep -a '^\[' "$f" | tail -n 1 | cut -c1-150)"; done
}

wait_for() {  # wait until the driver reaches phase $1 (or WAIT seconds pass)
  local start=$SECONDS
  while [ $((SECONDS - start)) -lt "$WAIT" ]; do
    grep -qx "$1" "$STUDY/phase" 2>/dev/null && return 0
    grep -qx failed "$STUDY/phase" 2>/dev/null && return 1
    sleep 15
  done
  return 1
}

driver() {  # runs detached: training, then the sweep shards, then the report
  export PYTHONPATH=$ROOT
  echo training > $STUDY/phase
  for seed in 4321 1234; do
    python3 -m softpick_bench.train.command --config configs/train/demo.yaml --out "$STUDY/train-s$seed" \
      --data /tmp/corpus --set seed=$seed --time-limit 1500 --analysis > "$LOGS/train-s$seed.log" 2>&1 &
  done
  mapfile -t VARIANTS < <(grep -v '^\s*#' configs/train/grids/tiny-sinks.txt | grep -v '^\s*$')
  for v in "${VARIANTS[@]}"; do
    name=${v%%|*}; sets=(); for o in ${v#*|}; do sets+=(--set "$o"); done
    python3 -m softpick_bench.train.command --config configs/train/micro.yaml --out "$STUDY/tiny/$name" \
      --data /tmp/corpus --time-limit 1200 --analysis "${sets[@]}" > "$LOGS/train-tiny-$name.log" 2>&1 &
  done
  wait
  python3 -m softpick_bench.train.table2 --grid "$STUDY/tiny" > "$STUDY/tiny/grid.md" 2>&1
  echo waiting-for-wheels > $STUDY/phase
  while [ ! -f $SITE/.ready ]; do sleep 5; done
  export PYTHONPATH=$ROOT:$SITE
  [ -f $STUDY/sweep.env ] && . $STUDY/sweep.env  # settings a later call wrote (e.g. SOFTPICK_GPTQ_TRITON=0)
  echo sweeping > $STUDY/phase
  for i in 0 1 2 3; do
    python3 -m softpick_bench.cli sweep configs/demo-study.yaml --out $STUDY/sweep --shard $i/4 \
      > "$LOGS/sweep-$i.log" 2>&1 &
  done
  wait
  python3 -m softpick_bench.cli report $STUDY/sweep > "$LOGS/report.log" 2>&1
  echo done > $STUDY/phase
}

case "${1:-}" in
  start)
    nvidia-smi -L
    python3 scripts/prepare_corpus.py --src .carry/text --out /tmp/corpus --val-file part-003.txt.xz \
      --max-val-tokens 500000 || exit 1
    setsid bash "$0" driver > "$LOGS/driver.log" 2>&1 < /dev/null &
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
    tar czf "$OUT/study-records.tar.gz" --exclude='*.items.json.gz' --exclude='requests' \
      --exclude='model.safetensors' "$STUDY/sweep" "$STUDY"/train-s* "$STUDY/tiny" "$LOGS"
    tar cf - "$STUDY"/sweep/cells/*.items.json.gz 2>/dev/null | split -b 15M - "$OUT/study-items.tar.part-"
    TINY=${TINY:-$(python3 scripts/pick_tiny_pair.py "$STUDY/tiny")}
    [ -n "$TINY" ] && tar cf "$OUT/tiny-pair.tar" -C "$STUDY/tiny/$TINY" softmax softpick
    ls -la "$OUT"; cat "$STUDY/tiny/grid.md"; tail -n 30 "$LOGS/report.log"
    ;;
  *) echo "usage: $0 start|wheels|wait|collect"; exit 2 ;;
esac
