#!/usr/bin/env bash
# One device call on one H100: build the token shards from the carried text (.carry/text, xz),
# then train the demo pair (configs/train/demo.yaml) and measure the analysis metrics. Results
# (not the 68 MB checkpoints) come back as $OUT/demo.tar.gz. Extra arguments go to the train
# command, e.g. `bash scripts/gpu_demo.sh --set seed=4321`.
#   run(kind=nvidia-h100-x1, carry=[.carry/text], command="bash scripts/gpu_demo.sh")
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
RUN=${RUN:-runs/demo}
mkdir -p "$RUN"
nvidia-smi -L
python3 scripts/prepare_corpus.py --src .carry/text --out .carry/corpus --val-file part-003.txt.xz \
    --max-val-tokens 500000 || exit 1
python3 -m softpick_bench.train.command --config configs/train/demo.yaml --out "$RUN" --data .carry/corpus \
    --time-limit "${TIME_LIMIT:-500}" --analysis "$@" 2>&1 | tee "$RUN/train.log"
tar czf "$OUT/demo.tar.gz" --exclude=model.safetensors "$RUN"
