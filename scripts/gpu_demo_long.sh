#!/usr/bin/env bash
# One device call: train the demo-long pair (time-limited to fit the 10-minute call), then the
# analysis metrics with and without a bos first token. Results (no checkpoints: 68 MB each) in $OUT.
set -uo pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
RUN=/tmp/demo-long
mkdir -p "$RUN"
python3 -m softpick_bench.train.command --config configs/train/demo-long.yaml --out "$RUN" \
    --data .carry/corpus --time-limit "${TIME_LIMIT:-470}" --analysis 2>&1 | tee "$RUN/train.log"
python3 - "$RUN" <<'PY' 2>&1 | tee -a "$RUN/train.log"
import json, sys
from pathlib import Path
from softpick_bench.eval.analysis import analyse_checkpoint
run = Path(sys.argv[1])
out = {}
for kind in ("softmax", "softpick"):
    out[kind] = analyse_checkpoint(run / kind, device="cuda", n_samples=100, seq_len=64, prepend_bos=False)
    print("no-bos T64", kind, {k: round(v, 4) for k, v in out[kind]["values"].items()}, flush=True)
(run / "analysis_nobos.json").write_text(json.dumps(out, indent=2) + "\n")
PY
for f in train.log train_log.jsonl summary.json loss.png analysis_over_training.png analysis.json analysis_T512.json analysis_nobos.json; do
    cp "$RUN/$f" "$OUT/" 2>/dev/null || echo "missing $f"
done
