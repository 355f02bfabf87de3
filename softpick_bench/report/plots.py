"""Degradation plots: each metric against weight bits, one line per method and attention kind."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on our machines
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

STYLE = {"softmax": "--", "softpick": "-"}


def plot_degradation(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One PNG per (pair, task, metric) over the weight-only cells that have a bit width."""
    paths = []
    weight_only = df[df["bits"].notna() & ~df["quant"].str.contains(r"\+", regex=True)]
    for (pair, task, metric), part in weight_only.groupby(["pair", "task", "metric"]):
        fig, ax = plt.subplots(figsize=(6, 4))
        for (method, kind), line in part.groupby(["method", "kind"]):
            line = line.groupby("bits")["value"].mean().sort_index()
            ax.plot(line.index, line.values, STYLE.get(kind, ":"), marker="o", label=f"{method} · {kind}")
        base = df[(df.pair == pair) & (df.task == task) & (df.metric == metric) & (df.quant == "none")]
        for _, row in base.iterrows():
            ax.axhline(row["value"], linestyle=STYLE.get(row["kind"], ":"), color="grey", linewidth=0.8)
        if metric.startswith("ppl") or "perplexity" in metric:
            ax.set_yscale("log")
        ax.set_xlabel("weight bits")
        ax.set_ylabel(metric)
        ax.set_title(f"{pair} · {task} (grey: unquantized)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{pair}-{task}-{metric}.png".replace("/", "_")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
