"""Regression check: a sweep's tidy results against a committed baseline CSV.

Cells are matched on (pair, kind, replicate, quant, task, metric). A value whose relative change
exceeds the tolerance, or a baseline cell missing from the run, is a regression; cells
new in the run are listed but pass. Used by CI on the default sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

KEY = ["pair", "kind", "replicate", "quant", "task", "metric"]


@dataclass
class Finding:
    cell: str
    baseline: float | None
    current: float | None
    rel_change: float | None
    verdict: str  # "changed", "missing", "new"


def _with_replicate(df: pd.DataFrame) -> pd.DataFrame:
    """Baselines written before replicates existed hold replicate 0 only."""
    if "replicate" in df.columns:
        return df.assign(replicate=df["replicate"].fillna(0).astype(int))
    return df.assign(replicate=0)


def compare(current: pd.DataFrame, baseline: pd.DataFrame, rtol: float) -> list[Finding]:
    current, baseline = _with_replicate(current), _with_replicate(baseline)
    merged = baseline[KEY + ["value"]].merge(
        current[KEY + ["value"]], on=KEY, how="outer", suffixes=("_base", "_now"), indicator=True
    )
    findings = []
    for _, r in merged.iterrows():
        cell = " ".join(str(r[k]) for k in KEY)
        if r["_merge"] == "left_only":
            findings.append(Finding(cell, r["value_base"], None, None, "missing"))
        elif r["_merge"] == "right_only":
            findings.append(Finding(cell, None, r["value_now"], None, "new"))
        else:
            base, now = float(r["value_base"]), float(r["value_now"])
            rel = abs(now - base) / max(abs(base), 1e-12)
            if rel > rtol:
                findings.append(Finding(cell, base, now, rel, "changed"))
    return findings


def failures(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.verdict in ("changed", "missing")]


def render(findings: list[Finding], rtol: float, compared: int) -> str:
    bad = failures(findings)
    lines = [f"regression check: {compared} baseline cells, tolerance {rtol:g} relative: "
             f"{'PASS' if not bad else f'FAIL ({len(bad)} cells)'}"]
    for f in findings:
        if f.verdict == "changed":
            lines.append(f"  changed  {f.cell}: {f.baseline:.6g} -> {f.current:.6g} ({f.rel_change:+.2%})")
        else:
            lines.append(f"  {f.verdict:<8} {f.cell}")
    return "\n".join(lines)
