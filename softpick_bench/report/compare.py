"""Softpick against softmax, cell by cell: relative degradations, their difference, and tests.

`per_replicate` pairs every quantized cell with its own kind's baseline (same pair, task,
replicate) and the other kind's matching cells; where all four cells have per-item results
the paired statistics of report/stats.py are attached. `across_replicates` summarises over
training seeds: the mean, and a 95% t interval when there are >= 2 seeds, else the one seed's
bootstrap interval.
"""

from __future__ import annotations

import math

import pandas as pd

from softpick_bench.report import stats
from softpick_bench.sweep.store import ResultStore

KEY = ["pair", "task", "metric", "quant", "replicate"]


def _items(store: ResultStore | None, key: str, metric: str, cache: dict) -> dict | None:
    if store is None:
        return None
    if key not in cache:
        cache[key] = store.read_items(key)
    payload = cache[key]
    return None if payload is None else payload["metrics"].get(metric)


def per_replicate(df: pd.DataFrame, store: ResultStore | None, n_resamples: int = stats.N_RESAMPLES,
                  seed: int = stats.SEED) -> pd.DataFrame:
    """One row per (pair, task, metric, quant, replicate) with a direction and both kinds present."""
    rows, cache = [], {}
    cols = ["value", "key", "has_items"]
    data = df[df.direction != "neither"]
    for (pair, task, metric, rep), part in data.groupby(["pair", "task", "metric", "replicate"], sort=False):
        by = {(r.kind, r.quant): r for r in part[["kind", "quant", *cols]].itertuples(index=False)}
        hib = part["direction"].iloc[0] == "higher"
        base = {k: by.get((k, "none")) for k in ("softmax", "softpick")}
        if None in base.values():
            continue
        for quant, qpart in part[part.quant != "none"].groupby("quant", sort=False):
            cell = {k: by.get((k, quant)) for k in ("softmax", "softpick")}
            if None in cell.values():
                continue
            first = qpart.iloc[0]
            row = {"pair": pair, "task": task, "metric": metric, "quant": quant, "replicate": rep,
                   "family": first["family"], "axis_bits": first["axis_bits"], "direction": first["direction"]}
            for k in ("softmax", "softpick"):
                row[f"base_{k}"] = base[k].value
                row[k] = cell[k].value
                row[f"rel_{k}"] = stats.relative_degradation(base[k].value, cell[k].value, hib)
            row["diff"] = row["rel_softpick"] - row["rel_softmax"]
            row.update(_tests(store, metric, base, cell, hib, cache, n_resamples, seed))
            rows.append(row)
    return pd.DataFrame(rows)


def _tests(store, metric, base, cell, hib, cache, n_resamples, seed) -> dict:
    out = {"test": None, "n_compared": None, "diff_low": math.nan, "diff_high": math.nan, "p_diff": math.nan,
           "kind_test": None, "p_softmax": math.nan, "p_softpick": math.nan,
           "rel_softmax_low": math.nan, "rel_softmax_high": math.nan,
           "rel_softpick_low": math.nan, "rel_softpick_high": math.nan}
    items = {f"{k}_base": _items(store, base[k].key, metric, cache) for k in ("softmax", "softpick")}
    items |= {f"{k}_quant": _items(store, cell[k].key, metric, cache) for k in ("softmax", "softpick")}
    if any(v is None for v in items.values()):
        return out
    try:
        b = stats.paired_bootstrap(items, hib, n_resamples=n_resamples, seed=seed)
    except ValueError as exc:  # e.g. cells scored on different items: said in the table, not hidden
        return out | {"test": f"none ({exc})"}
    out |= {"test": f"paired bootstrap ({b.n_resamples} resamples, seed {b.seed})", "n_compared": b.n_items,
            "diff_low": b.difference.low, "diff_high": b.difference.high, "p_diff": b.p_value,
            "rel_softmax_low": b.softmax.low, "rel_softmax_high": b.softmax.high,
            "rel_softpick_low": b.softpick.low, "rel_softpick_high": b.softpick.high,
            "kind_test": "bootstrap", "p_softmax": b.p_softmax, "p_softpick": b.p_softpick}
    if items["softmax_base"]["aggregation"] == "mean" and all(_binary(v) for v in items.values()):
        out["kind_test"] = "McNemar"
        for k in ("softmax", "softpick"):
            out[f"p_{k}"] = stats.mcnemar(items[f"{k}_base"], items[f"{k}_quant"]).p_value
    return out


def _binary(metric_items: dict) -> bool:
    return all(v in (0.0, 1.0) for v in metric_items["values"])


RESOLUTION = 5e-5  # differences are printed as % with 2 decimals: a whole interval inside ±0.005% shows as 0


def verdict(low: float, high: float) -> str:
    """'less' / 'more' (softpick degrades less / more), 'noise' (interval holds 0), 'same' (the
    whole interval is below the printed resolution, e.g. a rotation that changes only float
    rounding: a significant 1e-7 is not a finding), 'untested'."""
    if math.isnan(low) or math.isnan(high):
        return "untested"
    if max(abs(low), abs(high)) < RESOLUTION:
        return "same"
    if high < 0:
        return "less"
    if low > 0:
        return "more"
    return "noise"


def seeds_verdict(across: str, per_seed: list[str]) -> str:
    """The verdict over several seeds, from the interval across seeds (`across`) and each seed's own
    paired test (`per_seed`). With few seeds a t interval can come out narrow by chance, so a
    difference is called only where every seed's own test agrees with it; where every seed's test
    agrees but the spread across seeds is too wide to bound the mean: 'seeds-less' / 'seeds-more'."""
    if "untested" in per_seed or across == "same":
        return across  # no per-item results for some seed: the interval across seeds alone
    for side in ("less", "more"):
        if all(v == side for v in per_seed):
            return side if across == side else f"seeds-{side}"
    return "noise"


def across_replicates(per_rep: pd.DataFrame) -> pd.DataFrame:
    """One row per (pair, task, metric, quant): means over seeds and the interval of the difference."""
    rows = []
    if per_rep.empty:
        return per_rep
    for (pair, task, metric, quant), part in per_rep.groupby(["pair", "task", "metric", "quant"], sort=False):
        part = part.sort_values("replicate")
        n = len(part)
        row = {"pair": pair, "task": task, "metric": metric, "quant": quant, "replicates": n,
               **{c: part[c].iloc[0] for c in ("family", "axis_bits", "direction")}}
        for c in ("base_softmax", "base_softpick", "softmax", "softpick", "rel_softmax", "rel_softpick", "diff"):
            row[c] = float(part[c].mean())
        if n >= 2:
            row["interval"] = "t over seeds"
            for c, name in (("diff", "diff"), ("rel_softmax", "rel_softmax"), ("rel_softpick", "rel_softpick")):
                iv = stats.t_interval(list(part[c]))
                row[f"{name}_low"], row[f"{name}_high"] = iv.low, iv.high
        else:
            only = part.iloc[0]
            row["interval"] = only["test"]
            for c in ("diff_low", "diff_high", "rel_softmax_low", "rel_softmax_high", "rel_softpick_low",
                      "rel_softpick_high"):
                row[c] = only[c]
        row["p_diff_per_seed"] = list(part["p_diff"])
        row["p_softmax_per_seed"] = list(part["p_softmax"])
        row["p_softpick_per_seed"] = list(part["p_softpick"])
        row["kind_test"] = part["kind_test"].iloc[0]
        row["n_compared"] = part["n_compared"].iloc[0]
        row["verdict"] = verdict(row["diff_low"], row["diff_high"])
        if n >= 2:
            per_seed = [verdict(lo, hi) for lo, hi in zip(part["diff_low"], part["diff_high"])]
            row["verdict"] = seeds_verdict(row["verdict"], per_seed)
        rows.append(row)
    return pd.DataFrame(rows)
