"""Print the name of the tiny-grid run (folder under GRID) to ship as the default pair, or nothing.

A run qualifies when its analysis.json (T=64, bos first, 100 held-out samples) shows the phenomenon
(issue 11: softmax sink rate >= 20% at eps 0.3, softpick <= 2%, kurtosis ratio >= 5x) and each
checkpoint's weights are at most 8 MB. Among those, the lowest softpick validation loss wins.
"""

import json
import sys
from pathlib import Path

MAX_BYTES = 8 * 1000 * 1000


def qualifies(run: Path) -> tuple[bool, float]:
    try:
        a = json.loads((run / "analysis.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return False, float("inf")
    sm, sp = a["softmax"]["values"], a["softpick"]["values"]
    ok = (
        sm["sink_rate_0.3"] >= 0.20
        and sp["sink_rate_0.3"] <= 0.02
        and sm["kurtosis"] >= 5 * sp["kurtosis"]
        and all((run / k / "model.safetensors").stat().st_size <= MAX_BYTES for k in ("softmax", "softpick"))
    )
    return ok, summary["sides"]["softpick"]["final_val_loss"]


def main(grid: str) -> None:
    runs = sorted(p for p in Path(grid).iterdir() if p.is_dir())
    scored = [(loss, run.name) for run in runs for ok, loss in [qualifies(run)] if ok]
    if scored:
        print(min(scored)[1])


if __name__ == "__main__":
    main(sys.argv[1])
