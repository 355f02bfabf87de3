"""The report's sections as blocks: headline (primary task metrics with relative degradation and
significance, then one generated sentence per quant family), other task metrics, analysis metrics
with their direction, proof of quantization, skipped and failed cells."""

from __future__ import annotations

import pandas as pd

from softpick_bench.report import fmt
from softpick_bench.report.compare import across_replicates, verdict
from softpick_bench.report.directions import ANALYSIS_DIRECTIONS, NOT_COMPARABLE, PRIMARY_METRICS
from softpick_bench.report.doc import Block, Bullets, Heading, Para, Table
from softpick_bench.report.tables import quant_order

VERDICT_WORDS = {"less": "softpick less", "more": "softpick more", "noise": "within noise", "untested": "untested",
                 "same": "no difference at 0.01%",
                 "seeds-less": "less in each seed only", "seeds-more": "more in each seed only"}
DEFINITIONS = (
    "Relative degradation Δ = (quantized − baseline) / baseline of the same model, signed so that positive "
    "is worse (for higher-is-better metrics (baseline − quantized) / baseline). Difference = Δ softpick − "
    "Δ softmax: negative means softpick degrades less. \"No difference at 0.01%\": the whole 95% interval of "
    "the difference lies within ±0.005%, below the tables' resolution, however small its p."
)


def coverage_text(part: pd.DataFrame) -> str:
    """What the values of one table cover, from the metric details of its rows."""
    seen = []
    for r in part.drop_duplicates(["item_unit", "n_items", "n_items_total", "limit", "tokens", "tokens_total"]) \
            .itertuples(index=False):
        if fmt.missing(r.n_items):
            continue
        s = f"{fmt.count(r.n_items)}"
        if not fmt.missing(r.n_items_total):
            s += f" of {fmt.count(r.n_items_total)}"
        s += f" {r.item_unit}"
        if not fmt.missing(r.limit):
            s += f" (limit {fmt.count(r.limit)})"
        if not fmt.missing(r.tokens):
            s += f", {fmt.count(r.tokens)}"
            s += f" of {fmt.count(r.tokens_total)} tokens" if not fmt.missing(r.tokens_total) else " tokens"
        seen.append(s)
    if not seen:
        return "Covers: not recorded (older records)."
    return "Covers: " + ("; ".join(seen) if len(seen) == 1 else "varies by cell: " + "; ".join(seen)) + "."


def _direction_words(d: str) -> str:
    return {"higher": "higher is better", "lower": "lower is better"}.get(d, "no better or worse")


def _seeds_note(summary: pd.DataFrame, per_rep: pd.DataFrame) -> str:
    n = int(summary["replicates"].max())
    if n >= 2:
        return (f"{n} training seeds: values and Δ are means over seeds; the 95% interval is the Student-t "
                f"interval of the mean difference over seeds ({n - 1} degree{'s' if n > 2 else ''} of freedom); "
                f"p are each seed's own "
                f"paired test of the difference, in seed order. Verdict: softpick less (more) where that interval lies "
                f"below (above) 0 and every seed's own paired 95% interval does too; less (more) in each seed only "
                f"where every seed's own test agrees but the spread across {n} seeds is too wide to bound the mean; "
                f"within noise otherwise.")
    tested = summary["interval"].dropna()
    if len(tested):
        return (f"One seed. 95% interval and p: {tested.iloc[0]} over the items, all four cells (both baselines, "
                "both quantized models) resampled on the same items; p is two-sided for difference = 0. "
                "Beside each Δ: p of that model's own degradation (exact McNemar on per-document correctness "
                "for accuracies, the bootstrap for perplexities).")
    return "One seed and no per-item results: no significance test (the difference is shown without interval)."


def metric_table(summary: pd.DataFrame, tidy_part: pd.DataFrame) -> Table:
    """Rows: the baseline, then quant specs by family and bits."""
    dec = fmt.decimals_for(list(summary["softmax"]) + list(summary["softpick"]) +
                           list(summary["base_softmax"]) + list(summary["base_softpick"]))
    first = summary.iloc[0]
    rows = [["baseline (unquantized)", fmt.fixed(first["base_softmax"], dec), fmt.fixed(first["base_softpick"], dec),
             "", "", "", "", "", ""]]
    order = quant_order(tidy_part)
    summary = summary.set_index("quant").reindex([q for q in order if q in set(summary["quant"])])
    for quant, r in summary.iterrows():
        ps = [p for p in r["p_diff_per_seed"] if not fmt.missing(p)]
        p_text = ", ".join(fmt.p_value(p) for p in ps) if ps else fmt.DASH
        rows.append([
            quant,
            fmt.fixed(r["softmax"], dec),
            fmt.fixed(r["softpick"], dec),
            _rel_cell(r["rel_softmax"], r["p_softmax_per_seed"], r["replicates"]),
            _rel_cell(r["rel_softpick"], r["p_softpick_per_seed"], r["replicates"]),
            fmt.pct(r["diff"]),
            fmt.interval(r["diff_low"], r["diff_high"]),
            p_text,
            VERDICT_WORDS[r["verdict"]],
        ])
    return Table(["quant", "softmax", "softpick", "Δ softmax", "Δ softpick", "softpick − softmax",
                  "95% interval", "p", "verdict"], rows, ["l", "r", "r", "r", "r", "r", "r", "r", "l"], css="headline")


def _rel_cell(rel, p_per_seed, replicates) -> str:
    ps = [p for p in p_per_seed if not fmt.missing(p)]
    if replicates == 1 and ps:
        return f"{fmt.pct(rel)} (p {fmt.p_value(ps[0])})"
    return fmt.pct(rel)


def family_sentences(summary: pd.DataFrame) -> list[str]:
    """One sentence per quant family, generated from the verdicts and differences."""
    out = []
    for family, part in summary.groupby("family", sort=False):
        part = part.sort_values("axis_bits", na_position="last")

        def where(rows):
            return ", ".join(_point(r) for _, r in rows.iterrows())

        groups = {v: part[part.verdict == v]
                  for v in ("less", "more", "seeds-less", "seeds-more", "noise", "same", "untested")}
        clauses = []
        if len(groups["less"]):
            clauses.append(f"softpick degrades less at {where(groups['less'])}")
        if len(groups["more"]):
            clauses.append(f"softpick degrades more at {where(groups['more'])}")
        for side in ("less", "more"):
            if len(groups[f"seeds-{side}"]):
                clauses.append(f"softpick degrades {side} in every seed's own test (too few seeds to bound "
                               f"the mean) at {where(groups[f'seeds-{side}'])}")
        if len(groups["noise"]):
            clauses.append(f"the difference is within noise at {where(groups['noise'])}")
        if len(groups["same"]):
            clauses.append(f"no difference at 0.01% at {where(groups['same'])}")
        if len(groups["untested"]):
            unt = groups["untested"]
            lower, higher = unt[unt["diff"] < 0], unt[unt["diff"] >= 0]
            parts = []
            if len(lower):
                parts.append(f"lower for softpick at {where(lower)}")
            if len(higher):
                parts.append(f"not lower for softpick at {where(higher)}")
            clauses.append("untested (no per-item results), Δ " + " and ".join(parts))
        out.append(f"**{family}**: " + "; ".join(clauses) + ".")
    return out


def _point(r) -> str:
    where = f"{int(r['axis_bits'])} bits" if not fmt.missing(r["axis_bits"]) else r["quant"]
    return f"{where} ({fmt.pct(r['diff'])})"


def _title(pair, task, metric, direction) -> str:
    return f"{pair} · {task} · {metric} ({_direction_words(direction)})"


def task_sections(df: pd.DataFrame, per_rep: pd.DataFrame, primary: bool) -> tuple[list[Block], dict]:
    """Blocks for the primary (or the other) task metrics, and {title: sentences} for the CLI."""
    blocks, sentences = [], {}
    if per_rep.empty:
        return blocks, sentences
    summary = across_replicates(per_rep)
    task_metrics = summary[summary.task != "analysis"]
    rank = {m: i for i, m in enumerate(PRIMARY_METRICS)}
    keys = task_metrics[["pair", "task", "metric"]].drop_duplicates()
    keys = keys[keys.metric.isin(PRIMARY_METRICS) == primary]
    keys = keys.assign(_r=keys.metric.map(rank).fillna(99)).sort_values(["pair", "_r", "task"])
    for pair, task, metric in keys[["pair", "task", "metric"]].itertuples(index=False):
        part = task_metrics[(task_metrics.pair == pair) & (task_metrics.task == task) & (task_metrics.metric == metric)]
        tidy_part = df[(df.pair == pair) & (df.task == task) & (df.metric == metric)]
        title = _title(pair, task, metric, part["direction"].iloc[0])
        blocks.append(Heading(3, title))
        notes = [coverage_text(tidy_part), _seeds_note(part, per_rep)]
        if task in NOT_COMPARABLE:
            notes.append("**" + NOT_COMPARABLE[task] + "**")
        blocks.append(Para(" ".join(notes)))
        blocks.append(metric_table(part, tidy_part))
        s = family_sentences(part)
        blocks.append(Bullets(s))
        sentences[title] = s
    return blocks, sentences


def analysis_sections(df: pd.DataFrame) -> list[Block]:
    """Analysis metrics: absolute values and each model's change from its own baseline, with the direction."""
    blocks = []
    part_all = df[df.task == "analysis"]
    if part_all.empty:
        return blocks
    blocks.append(Heading(2, "Analysis metrics (paper section 4)"))
    blocks.append(Para("Change = quantized − baseline of the same model (absolute: several baselines are 0). "
                       "Values are means over training seeds where there are several."))
    order = list(ANALYSIS_DIRECTIONS) + sorted(set(part_all.metric) - set(ANALYSIS_DIRECTIONS))
    for pair in sorted(set(part_all.pair)):
        for metric in [m for m in order if m in set(part_all.metric)]:
            part = part_all[(part_all.pair == pair) & (part_all.metric == metric)]
            direction, meaning = ANALYSIS_DIRECTIONS.get(metric, ("neither", "no direction recorded"))
            blocks.append(Heading(3, f"{pair} · analysis · {metric} ({_direction_words(direction)}: {meaning})"))
            blocks.append(Para(coverage_text(part)))
            wide = part.pivot_table(index="quant", columns="kind", values="value", aggfunc="mean")
            wide = wide.reindex(columns=["softmax", "softpick"])
            dec = fmt.decimals_for(wide.to_numpy().ravel())
            base = wide.loc["none"] if "none" in wide.index else None
            rows = []
            for quant in [q for q in quant_order(part) if q in wide.index]:
                r = wide.loc[quant]
                if quant == "none" or base is None:
                    rows.append([quant if quant != "none" else "baseline (unquantized)",
                                 fmt.fixed(r["softmax"], dec), fmt.fixed(r["softpick"], dec), "", "", ""])
                    continue
                d_sm, d_sp = r["softmax"] - base["softmax"], r["softpick"] - base["softpick"]
                rows.append([quant, fmt.fixed(r["softmax"], dec), fmt.fixed(r["softpick"], dec),
                             fmt.fixed(d_sm, dec, sign=True), fmt.fixed(d_sp, dec, sign=True),
                             fmt.fixed(d_sp - d_sm, dec, sign=True)])
            blocks.append(Table(["quant", "softmax", "softpick", "change softmax", "change softpick",
                                 "softpick − softmax change"], rows))
    return blocks


def proof_section(df: pd.DataFrame) -> list[Block]:
    proof = df.drop_duplicates(["pair", "kind", "replicate", "quant"])
    proof = proof[proof.quant != "none"]
    if proof.empty:
        return []
    rows = []
    for _, r in proof.iterrows():
        rows.append([r["pair"], r["kind"], str(r["replicate"]), r["quant"],
                     f"{fmt.count(r['layers_quantized'])}/{fmt.count(r['layers_total'])}",
                     fmt.fixed(r["rel_weight_error"], 4), fmt.fixed(r["effective_bits"], 3),
                     " / ".join(fmt.fixed(r[c], 4) for c in ("rel_act_error", "rel_kv_error", "rel_probs_error")),
                     r["skip"] or fmt.DASH])
    return [Heading(2, "Proof of quantization"),
            Table(["pair", "kind", "seed", "quant", "layers quantized", "rel. weight error", "bits/param",
                   "rel. act / KV / probs error", "skipped"], rows, ["l", "l", "r", "l", "r", "r", "r", "r", "l"])]


def cells_sections(skipped: list[dict], errors: list[dict]) -> list[Block]:
    blocks = []
    if skipped:
        blocks += [Heading(3, "Skipped cells"), Bullets([f"{s['cell']}: {s['reason']}" for s in skipped])]
    if errors:
        blocks += [Heading(3, "Failed cells (retried on the next run)"),
                   Bullets([f"{e['pair']}/{e['kind']} {e['quant_label']} {e['task']['name']}: {e['error']}"
                            for e in errors])]
    return ([Heading(2, "Cells not in the tables")] + blocks) if blocks else []


__all__ = ["DEFINITIONS", "analysis_sections", "cells_sections", "proof_section", "task_sections", "verdict"]
