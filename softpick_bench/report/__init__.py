"""Reports: tidy CSV, Markdown degradation tables and plots from a sweep's result store."""

from __future__ import annotations

import json
from pathlib import Path

from softpick_bench.report.plots import plot_degradation
from softpick_bench.report.tables import markdown, tidy
from softpick_bench.sweep.store import ResultStore


def write_report(out: str | Path, plots: bool = True) -> str:
    """Write results.csv, report.md and plots/ into `out`; return the Markdown."""
    out = Path(out)
    if not (out / "cells").is_dir():
        raise FileNotFoundError(f"{out}: no sweep results here (expected a cells/ folder written by `sweep`)")
    store = ResultStore(out)
    df = tidy(store.records())
    plan_path = out / "plan.json"
    plan = json.loads(plan_path.read_text()) if plan_path.is_file() else {}
    skipped = plan.get("skipped", [])
    errors = store.records(errors=True)
    df.to_csv(out / "results.csv", index=False)
    text = f"# Sweep {plan.get('name', out.name)}\n\n" + markdown(df, skipped, errors)
    (out / "report.md").write_text(text)
    if plots and not df.empty:
        (out / "plots").mkdir(exist_ok=True)
        plot_degradation(df, out / "plots")
    return text
