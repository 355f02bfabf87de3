#!/usr/bin/env bash
# One device call on one H100: build the token shards from the carried text (.carry/text, xz),
# train the demo pair (configs/train/demo.yaml) with the analysis metrics, then, with the time
# left, sweep it under RTN and GPTQ at 2-4 bits (configs/demo-sweep.yaml). Results (not the
# 68 MB checkpoints) come back in $OUT; training results are copied there before the sweep.
#   run(kind=nvidia-h100-x1, carry=[.carry/text], command="bash scripts/gpu_demo.sh")
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
RUN=runs/demo
mkdir -p "$RUN"
nvidia-smi -L
python3 scripts/prepare_corpus.py --src .carry/text --out .carry/corpus --val-file part-003.txt.xz \
    --max-val-tokens 500000 || exit 1
python3 -m softpick_bench.train.command --config configs/train/demo.yaml --out "$RUN" --data .carry/corpus \
    --time-limit "${TIME_LIMIT:-500}" --analysis 2>&1 | tee "$RUN/train.log"
tar czf "$OUT/demo.tar.gz" --exclude=softmax/model.safetensors --exclude=softpick/model.safetensors "$RUN"
timeout "${SWEEP_S:-90}" python3 -m softpick_bench.cli sweep configs/demo-sweep.yaml --out runs/demo-sweep 2>&1 | tail -n 30
python3 -m softpick_bench.cli report runs/demo-sweep 2>&1 | tail -n 3
tar czf "$OUT/demo-sweep.tar.gz" runs/demo-sweep
