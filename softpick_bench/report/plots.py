"""Degradation plots: per task metric, each model's relative degradation against bits (one panel
per quant family, both kinds on the same axes, with intervals), and a heatmap per pair of the
softpick − softmax difference over family × bits."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on our machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from softpick_bench.report import fmt  # noqa: E402

COLORS = {"softmax": "#d62728", "softpick": "#1f77b4"}
MARKERS = {"softmax": "s", "softpick": "o"}
CURVE_COLUMNS = 5  # method panels per row of a degradation figure
HEATMAP_COLUMNS = 3  # metric panels per row of a heatmap


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _panels(n: int, columns: int, width: float, height: float, **kw):
    """A figure of n panels wrapped into rows of at most `columns` (a study of many methods or
    metrics stays readable); the unused panels of the last row are hidden. Returns (fig, axes list)."""
    ncols = min(n, columns)
    nrows = -(-n // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(width * ncols + 0.8, height * nrows), squeeze=False, **kw)
    axes = list(grid.flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _save(fig, path: Path) -> Path:
    fig.tight_layout(rect=(0, 0, 1, 0.96))  # room for the suptitle
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_degradation(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One PNG per (pair, task, metric) of the across-replicates summary (compare.across_replicates)."""
    paths = []
    curves = summary[summary["axis_bits"].notna() & (summary.task != "analysis")]
    for (pair, task, metric), part in curves.groupby(["pair", "task", "metric"], sort=True):
        families = list(dict.fromkeys(part["family"]))
        fig, axes = _panels(len(families), CURVE_COLUMNS, 4.2 if len(families) > 1 else 5.2, 4.0, sharey=True)
        base = part.iloc[0]
        interval = part["interval"].dropna()
        for ax, family in zip(axes, families):
            line = part[part.family == family].sort_values("axis_bits")
            x = line["axis_bits"].astype(float).to_numpy()
            for i, kind in enumerate(("softmax", "softpick")):
                y = 100 * line[f"rel_{kind}"].to_numpy(dtype=float)
                low = 100 * line[f"rel_{kind}_low"].to_numpy(dtype=float)
                high = 100 * line[f"rel_{kind}_high"].to_numpy(dtype=float)
                label = f"{kind} (baseline {fmt.fixed(base[f'base_{kind}'], fmt.decimals_for([base[f'base_{kind}']]))})"
                xs = x + (i - 0.5) * 0.08  # a small offset so that the bars do not hide each other
                ax.plot(xs, y, marker=MARKERS[kind], color=COLORS[kind], label=label)
                if np.isfinite(low).any():
                    ax.fill_between(xs, low, high, color=COLORS[kind], alpha=0.18, linewidth=0)
            ax.axhline(0, color="grey", linewidth=0.8)
            ax.set_xticks(sorted(set(x)))
            if len(set(x)) == 1:  # one setting: keep the two kinds' offset small on the axis
                ax.set_xlim(x[0] - 1, x[0] + 1)
            ax.set_title(family, fontsize=10)
            ax.set_xlabel("bits")
            ax.grid(alpha=0.3)
        for ax in axes[::CURVE_COLUMNS]:  # the first panel of each row
            ax.set_ylabel(f"Δ {metric} vs own baseline (%, + = worse)")
        axes[0].legend(fontsize=8)
        band = f"bands: 95% {interval.iloc[0]}" if len(interval) else "no intervals (no per-item results)"
        fig.suptitle(f"{pair} · {task} · {metric}: relative degradation vs bits\n({band})", fontsize=10)
        paths.append(_save(fig, out_dir / _safe(f"{pair}-{task}-{metric}-degradation.png")))
    return paths


def plot_heatmap(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Per pair: one heatmap per task metric of (Δ softpick − Δ softmax) in % over family × bits."""
    paths = []
    data = summary[summary["axis_bits"].notna() & (summary.task != "analysis") & summary["diff"].notna()]
    for pair, part in data.groupby("pair", sort=True):
        metrics = list(part[["task", "metric"]].drop_duplicates().itertuples(index=False, name=None))
        if not metrics:  # no metric has both kinds quantized and unquantized: nothing to draw
            continue
        fig, axes = _panels(len(metrics), HEATMAP_COLUMNS, 6.5, 0.5 * part.family.nunique() + 2.4)
        for ax, (task, metric) in zip(axes, metrics):
            m = part[(part.task == task) & (part.metric == metric)]
            grid = m.pivot_table(index="family", columns="axis_bits", values="diff", aggfunc="first") * 100
            lim = float(np.nanmax(np.abs(grid.to_numpy()))) or 1.0
            im = ax.imshow(grid.to_numpy(dtype=float), cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
            ax.set_xticks(range(grid.shape[1]), [str(int(b)) for b in grid.columns])
            ax.set_yticks(range(grid.shape[0]), list(grid.index))
            for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=8,
                            color="white" if abs(v) > 0.6 * lim else "black")
            ax.set_xlabel("bits")
            ax.set_title(f"{task} · {metric}", fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.8, label="Δ softpick − Δ softmax (%)")
        fig.suptitle(f"{pair}: softpick − softmax relative degradation (blue: softpick degrades less)", fontsize=10)
        paths.append(_save(fig, out_dir / _safe(f"{pair}-heatmap.png")))
    return paths
