#!/usr/bin/env bash
# One device call on a multi-GPU machine (nvidia-h200-x8; fewer GPUs run the first variants):
# build the token shards from the carried text (.carry/text, xz), then train one demo-size pair
# per GPU, each with one recipe change against configs/train/demo.yaml, and measure the
# analysis metrics (T=64 with and without bos, T=seq_len) on every checkpoint.
# Everything except the checkpoints comes back as $OUT/grid.tar.gz; a table goes to stdout.
#   run(kind=nvidia-h200-x8, carry=[.carry/text], command="bash scripts/gpu_recipe_grid.sh GRID_FILE")
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
WORK=/tmp/grid
STEPS=${STEPS:-3000}
CONFIG=${CONFIG:-configs/train/demo.yaml}
GRID=${1:?usage: gpu_recipe_grid.sh configs/train/grids/roundN.txt}
mkdir -p "$WORK"
python3 scripts/prepare_corpus.py --src .carry/text --out "$WORK/corpus" --val-file part-003.txt.xz \
    --max-val-tokens 500000 || exit 1

# variants: one "name|KEY=VALUE ..." per line of the grid file (in priority order: a machine
# with fewer GPUs runs the first ones); the grids that were run are in configs/train/grids/
mapfile -t VARIANTS < <(grep -v '^\s*#' "$GRID" | grep -v '^\s*$')
N_GPU=${N_GPU:-$(python3 -c "import torch; print(torch.cuda.device_count())")}
echo "GPUs: $N_GPU"; nvidia-smi -L 2>/dev/null
for i in "${!VARIANTS[@]}"; do
  [ "$i" -ge "$N_GPU" ] && break
  name=${VARIANTS[$i]%%|*}; opts=${VARIANTS[$i]#*|}
  sets=(); for o in $opts; do sets+=(--set "$o"); done
  mkdir -p "$WORK/$name"
  CUDA_VISIBLE_DEVICES=$i python3 -m softpick_bench.train.command --config "$CONFIG" \
      --out "$WORK/$name" --data "$WORK/corpus" --steps "$STEPS" --time-limit "${TIME_LIMIT:-480}" \
      --analysis "${sets[@]}" > "$WORK/$name/train.log" 2>&1 &
done
wait
for i in "${!VARIANTS[@]}"; do
  [ "$i" -ge "$N_GPU" ] && break
  name=${VARIANTS[$i]%%|*}; echo "== $name"; tail -n 8 "$WORK/$name/train.log"
done
python3 -m softpick_bench.train.table2 --grid "$WORK"
tar czf "$OUT/grid.tar.gz" -C "$WORK" --exclude=corpus --exclude='*/softmax' --exclude='*/softpick' .
