"""Loss curves of a pair from its train_log.jsonl (PNG)."""

from __future__ import annotations

import json
from pathlib import Path


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_losses(log_path: Path, png_path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_log(log_path)
    kinds = sorted({r["kind"] for r in records if "kind" in r})
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for kind, color in zip(kinds, ("tab:blue", "tab:red", "tab:green", "tab:purple")):
        train = [(r["step"], r["loss"]) for r in records if r.get("event") == "train" and r["kind"] == kind]
        val = [(r["step"], r["val_loss"]) for r in records if r.get("event") == "val" and r["kind"] == kind]
        if train:
            ax.plot(*zip(*train), color=color, alpha=0.6, lw=1, label=f"{kind} train")
        if val:
            ax.plot(*zip(*val), color=color, marker="o", lw=2, label=f"{kind} validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
