#!/usr/bin/env bash
# The GPU benchmarks of issues 10 and 14 on one H200, in device calls issued back to back (the
# machine keeps files between calls while it stays warm; a detached driver works between them):
#   1. run(carry=[.whl-gpu, .carry/llama2-tokenizer, .carry/ray-deps], command="bash scripts/gpu_bench.sh start")
#      copies the working tree to /tmp/sb, installs the GPU wheelhouse and starts the driver, which
#      runs the steps named in STEPS, in this order:
#        bootstrap: benchmarks/bootstrap_stderr.py (lm-eval's perplexity stderr, alone);
#        gputest: the fused forward's tolerance test on CUDA in bf16 (tests/test_fused_forward.py);
#        forward: benchmarks/eval_throughput.py, eager against fused forward on the five tasks' full
#          requests (packed loop, both kinds);
#        ppl: benchmarks/perplexity_paths.py, wikitext2 padded/packed x eager/fused;
#        gptq: benchmarks/gptq_speed.py at the 340M shape;
#        executors: once the Ray wheel is complete, benchmarks/executors.py on configs/gpu-smoke.yaml
#          (local, process, ray; EXEC_REPEATS rounds);
#        sweep: benchmarks/sweep.py, the paper's 340M matrix through the sweep command (SWEEP_ARGS).
#      Nothing else uses the GPU while a benchmark runs.
#   2. run(carry=[.carry/ray-a], command="bash scripts/gpu_bench.sh ray-a"): keeps the first half
#      of the Ray wheel and returns.
#   3. run(carry=[.carry/ray-b], command="bash scripts/gpu_bench.sh ray-b"): joins the two halves
#      and installs Ray into the driver's site folder (its four dependencies the machine lacks came
#      in call 1); waits until the executors step is over and returns the tables made so far.
#   4. run(command="bash scripts/gpu_bench.sh collect"), again while the driver runs: waits for it
#      (WAIT seconds at most), then copies the tables, the log and the sweep's records into $OUT.
# Why split: the working tree (32 MB) and the Ray wheel do not fit one call's 64 MiB. The carried
# Ray wheel is ray 2.54.0 cp312 without ray/jars (Java workers, unused here) and the dashboard's
# source maps, 40 MB instead of 73 MB; the Python package is otherwise the released one.
# Prepare here (ignored paths):
#   .carry/llama2-tokenizer: ../shared/data/tokenizers/llama2 loaded with sentencepiece and saved
#     as tokenizer.json by transformers' AutoTokenizer.save_pretrained
#   ray-trim.whl: the ray wheel with `zip -d ray.whl 'ray/jars/*' 'ray/dashboard/client/build/static/js/*.map'`
#   .carry/ray-a/ray.part-a: its first 20000000 bytes (`head -c`); .carry/ray-b/ray.part-b: the rest;
#   .carry/ray-deps: the jsonschema, jsonschema-specifications, referencing and rpds-py cp312 wheels
# Ran 2026-12-02 (session 5): gptq and sweep (results/bench/*-h200.md; the sweep took 1181 s, so
# calls 2 and 4 waited their full WAIT). The executors step failed there: every `process` child died
# with "Cannot re-initialize CUDA in forked subprocess" (fixed since: spawned children on CUDA).
# Session 6: STEPS="bootstrap executors sweep" SWEEP_ARGS="--batch-size 4096 --batch-tokens 131072"
# (the scoring forward ran at 7.6% of the bf16 peak with packs of 64 requests). gpu-smoke takes
# about 95 s per executor run, so the executors step took 870 s and the device time ran out at 121
# of the sweep's 180 cells.
# Session 7: STEPS="bootstrap gputest forward sweep" SWEEP_ARGS="--batch-size 4096 --batch-tokens 131072
# --forward fused" (carry .whl-gpu and .carry/llama2-tokenizer only; no Ray calls), then `collect`
# twice: the matrix in 505 s (results/bench/sweep-h200.md); $OUT takes at most 8 files, so
# collect now returns only the tables this run wrote. Next: STEPS="ppl sweep" with the same SWEEP_ARGS (packed wikitext2
# windows, the sweep's phases in the stage table); about 480 s for the sweep.
# Every call returns within WAIT seconds (default 540) and prints the driver's progress.
set -uo pipefail
export PYTHONUNBUFFERED=1
SB=/tmp/sb
SITE=/tmp/site
LOG=/tmp/bench-driver.log
WAIT=${WAIT:-540}
STEPS=${STEPS:-bootstrap executors sweep}  # the driver's steps (of bootstrap gputest forward ppl gptq executors sweep), in that order
EXEC_REPEATS=${EXEC_REPEATS:-3}       # runs of each executor
SWEEP_ARGS=${SWEEP_ARGS:-}            # e.g. "--batch-size 4096 --batch-tokens 131072" (the replay's limits)

progress() {
  echo "--- $(date +%T) driver: $(cat /tmp/bench-phase 2>/dev/null || echo none)"
  grep -a -o '\[[0-9]*/[0-9]*\] [^(]*' "$LOG" 2>/dev/null | tail -n 3
  echo "records: $(ls /tmp/bench-sweep/run/cells 2>/dev/null | grep -c '[0-9a-f]\.json$') ok, $(ls /tmp/bench-sweep/run/cells 2>/dev/null | grep -c 'error\.json$') error"
  tail -n 2 "$LOG" 2>/dev/null | cut -c1-200
}

wait_for() {  # wait until the driver reaches a phase matching $1, an ERE (or WAIT seconds pass)
  local start=$SECONDS
  while [ $((SECONDS - start)) -lt "$WAIT" ]; do
    grep -qxE "$1" /tmp/bench-phase 2>/dev/null && return 0
    sleep 10
  done
  return 1
}

driver() {
  cd $SB || exit 1
  export PYTHONPATH=$SITE:$SB
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  if [[ " $STEPS " == *" bootstrap "* ]]; then
    echo bootstrap > /tmp/bench-phase
    python3 benchmarks/bootstrap_stderr.py --out results/bench/bootstrap-stderr-h200.md 2>&1 | grep -v 'it/s]'
  fi
  if [[ " $STEPS " == *" gputest "* ]]; then
    echo gputest > /tmp/bench-phase
    python3 -m pytest -q -p no:cacheprovider tests/test_fused_forward.py 2>&1 | tee results/bench/fused-forward-test-h200.txt | tail -n 5
  fi
  if [[ " $STEPS " == *" forward "* ]]; then
    echo forward > /tmp/bench-phase
    python3 benchmarks/eval_throughput.py --tokenizer .carry/llama2-tokenizer --loops on,on+fused --limit 0 \
      --out results/bench/fused-forward-h200.md 2>&1 | grep -v '^{' | tail -n 20
  fi
  if [[ " $STEPS " == *" ppl "* ]]; then
    echo ppl > /tmp/bench-phase
    python3 benchmarks/perplexity_paths.py --tokenizer .carry/llama2-tokenizer \
      --out results/bench/perplexity-paths-h200.md 2>&1 | grep -v '^(' | tail -n 14
  fi
  if [[ " $STEPS " == *" gptq "* ]]; then
    echo gptq > /tmp/bench-phase
    python3 benchmarks/gptq_speed.py > results/bench/gptq-speed-h200.txt 2>&1
    cat results/bench/gptq-speed-h200.txt
  fi
  if [[ " $STEPS " == *" executors "* ]]; then
    echo waiting-for-ray > /tmp/bench-phase
    while [ ! -f $SITE/.ray-ready ]; do sleep 5; done
    echo executors > /tmp/bench-phase
    python3 benchmarks/executors.py configs/gpu-smoke.yaml --repeats "$EXEC_REPEATS" \
      --out results/bench/executors-h200.md
  fi
  if [[ " $STEPS " == *" sweep "* ]]; then
    echo sweep > /tmp/bench-phase
    # shellcheck disable=SC2086  # SWEEP_ARGS: extra benchmark options, word-split on purpose
    python3 benchmarks/sweep.py --tokenizer .carry/llama2-tokenizer --work /tmp/bench-sweep \
      --out results/bench/sweep-h200.md $SWEEP_ARGS
  fi
  echo done > /tmp/bench-phase
}

case "${1:-}" in
  start)
    rm -rf $SB && mkdir -p $SB && cp -a . $SB/ && mkdir -p $SITE $SB/results/bench && touch /tmp/bench-start
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $SITE \
      .whl-gpu/*.whl $(ls .carry/ray-deps/*.whl 2>/dev/null) || exit 1
    (STEPS="$STEPS" SWEEP_ARGS="$SWEEP_ARGS" EXEC_REPEATS="$EXEC_REPEATS" setsid bash "$0" driver > $LOG 2>&1 &)
    sleep 60
    progress
    ;;
  driver)
    driver
    ;;
  ray-a)
    cp .carry/ray-a/ray.part-a /tmp/ && ls -la /tmp/ray.part-a
    progress
    ;;
  ray-b)
    w=/tmp/ray-2.54.0-cp312-cp312-manylinux2014_x86_64.whl
    cat /tmp/ray.part-a .carry/ray-b/ray.part-b > $w \
      && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE $w \
      && PYTHONPATH=$SITE python3 -c "import ray; print('ray', ray.__version__)" && touch $SITE/.ray-ready
    wait_for 'sweep|done'  # the executors step is over: its table comes back now
    progress
    find $SB/results/bench -name '*-h200.*' -newer /tmp/bench-start -exec cp {} "$OUT"/ \;  # this run's only
    ;;
  collect)
    wait_for done
    progress
    find $SB/results/bench -name '*-h200.*' -newer /tmp/bench-start -exec cp {} "$OUT"/ \;  # this run's only
    cp $LOG "$OUT"/ 2>/dev/null
    tar czf "$OUT/bench-sweep-run.tar.gz" -C /tmp/bench-sweep --exclude='*.items.json*' --exclude='requests' \
      --exclude='checkpoints' run 2>/dev/null
    ls -la "$OUT"
    ;;
  *)
    echo "usage: $0 start|ray-a|ray-b|collect" >&2
    exit 2
    ;;
esac
