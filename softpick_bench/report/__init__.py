"""Reports: results.csv (tidy), report.md and report.html (headline first), plots/ from a result folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from softpick_bench.errors import SoftpickBenchError
from softpick_bench.report import doc
from softpick_bench.report.compare import across_replicates, per_replicate
from softpick_bench.report.headline import (
    DEFINITIONS,
    analysis_sections,
    cells_sections,
    proof_section,
    task_sections,
)
from softpick_bench.report.plots import plot_degradation, plot_heatmap
from softpick_bench.report.tables import tidy
from softpick_bench.sweep.store import ResultStore


class NoResultsError(SoftpickBenchError):
    """A report was asked of a folder with no sweep results."""


@dataclass
class Report:
    out: Path
    headline: dict[str, list[str]]  # table title -> one sentence per quant family
    paths: dict[str, Path] = field(default_factory=dict)  # report.md, report.html, results.csv, plots/
    cells: int = 0

    def summary(self) -> str:
        """What the CLI prints: the headline sentences and where everything is."""
        lines = ["", "Headline (softpick vs softmax, relative degradation from each model's own baseline):"]
        if not self.headline:
            lines.append("  no primary task metric with both kinds quantized and unquantized")
        for title, sentences in self.headline.items():
            lines.append(f"  {title}")
            lines += [f"    {s.replace('**', '')}" for s in sentences]
        lines.append("")
        lines += [f"{name:<12} {path}" for name, path in self.paths.items()]
        return "\n".join(lines)


def write_report(out: str | Path, plots: bool = True, n_resamples: int | None = None) -> Report:
    """Write results.csv, report.md, report.html and plots/ into `out`."""
    out = Path(out)
    if not (out / "cells").is_dir():
        raise NoResultsError(f"{out}: no sweep results here (no cells/ folder; run `softpick-bench sweep` first)")
    store = ResultStore(out)
    plan = store.read_plan() or {}
    if plan.get("cells") and "pair" in plan["cells"][0]:  # the plan names its cells: report those only
        records, errors = store.for_plan(plan), store.for_plan(plan, errors=True)
        foreign = store.foreign_keys(plan)
    else:  # an older folder: every record in it
        records, errors, foreign = store.records(), store.records(errors=True), []
    if not records and not errors:
        raise NoResultsError(f"{out}: no finished cells in {out / 'cells'} (run `softpick-bench sweep` first)")
    df = tidy(records)
    paths = {"results.csv": out / "results.csv", "report.md": out / "report.md", "report.html": out / "report.html"}
    df.to_csv(paths["results.csv"], index=False)

    title = f"Sweep {plan.get('name', out.name)}"
    blocks: list[doc.Block] = [doc.Heading(1, title)]
    headline: dict[str, list[str]] = {}
    if df.empty:
        blocks.append(doc.Para("No finished cells."))
    else:
        kw = {} if n_resamples is None else {"n_resamples": n_resamples}
        per_rep = per_replicate(df, store, **kw)
        summary = across_replicates(per_rep)
        primary, headline = task_sections(df, per_rep, primary=True)
        other, _ = task_sections(df, per_rep, primary=False)
        blocks.append(doc.Heading(2, "Headline: does softpick degrade less than softmax?"))
        blocks.append(doc.Para(DEFINITIONS))
        blocks += primary or [doc.Para("No primary task metric (ppl_gptq, word_perplexity, LAMBADA perplexity, "
                                       "acc, acc_norm) has both kinds quantized and unquantized.")]
        if plots and not summary.empty:
            plot_dir = out / "plots"
            plot_dir.mkdir(exist_ok=True)
            images = plot_heatmap(summary, plot_dir) + plot_degradation(summary, plot_dir)
            if images:
                paths["plots/"] = plot_dir
                blocks.append(doc.Heading(2, "Plots"))
                blocks += [doc.Image(p, p.stem) for p in images]
        if other:
            blocks += [doc.Heading(2, "Other task metrics"), *other]
        blocks += analysis_sections(df)
        blocks += proof_section(df)
    blocks += cells_sections(plan.get("skipped", []), errors)
    notes = [f"{len(foreign)} cell record(s) in this folder belong to another plan and are not shown."] if foreign else []
    notes += [f"Set aside: {p}" for p in store.problems]
    if notes:
        blocks += [doc.Heading(2, "Folder notes"), *[doc.Para(n) for n in notes]]
    paths["report.md"].write_text(doc.to_markdown(blocks, out))
    paths["report.html"].write_text(doc.to_html(blocks, title))
    return Report(out, headline, paths, cells=len(records))
