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


def plot_analysis(log_path: Path, png_path: Path, title: str = "") -> bool:
    """Sink rate (eps 0.3) and kurtosis at each evaluation, from the tracked analysis records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_log(log_path) if r.get("event") == "analysis"]
    if not records:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for kind, color in zip(sorted({r["kind"] for r in records}), ("tab:blue", "tab:red")):
        rs = [r for r in records if r["kind"] == kind]
        steps = [r["step"] for r in rs]
        ax1.plot(steps, [100 * r["sink_rate_0.3"] for r in rs], "o-", color=color, label=kind)
        ax2.plot(steps, [r["kurtosis"] for r in rs], "o-", color=color, label=kind)
    ax1.set_ylabel("sink rate, eps 0.3 (%)")
    ax2.set_ylabel("kurtosis (Pearson)")
    ax2.set_yscale("log")
    for ax in (ax1, ax2):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return True
