"""Paired statistics on per-item results (softpick_bench.eval.items) and across training seeds.

What is compared is a *relative degradation*: each model against its own unquantized baseline,
signed so that positive always means worse,

    rel = (q - base) / base      for lower-is-better metrics (perplexities)
    rel = (base - q) / base      for higher-is-better metrics (accuracies),

and the difference  rel(softpick) - rel(softmax)  (negative: softpick degrades less).

- `mcnemar`: exact McNemar test of one model's quantized vs unquantized per-document correctness
  (H0: a document is as likely to flip right->wrong as wrong->right). Tests whether that model's
  accuracy degradation is real; it says nothing about the other model.
- `paired_bootstrap`: the four cells (softmax base, softmax quant, softpick base, softpick quant)
  are scored on the same items (same documents or windows); item indices are resampled jointly
  for all four, each metric is recomputed with its own aggregation (as eval.items.aggregate does),
  and the 95% percentile interval of each kind's rel and of the difference is returned, with a
  two-sided bootstrap p-value for "the difference is zero" (twice the smaller tail mass at 0).
- `t_interval`: mean and 95% Student-t interval over replicates (training seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from softpick_bench.eval.items import aggregate

N_RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
CELLS = ("softmax_base", "softmax_quant", "softpick_base", "softpick_quant")


def relative_degradation(base: float, quant: float, higher_is_better: bool) -> float:
    """(q - base)/base, or (base - q)/base for higher-is-better: positive means worse."""
    if base == 0:
        return math.nan
    return (base - quant) / abs(base) if higher_is_better else (quant - base) / abs(base)


# ---- exact McNemar ---------------------------------------------------------------------------


@dataclass(frozen=True)
class McNemar:
    worse: int  # right in the baseline, wrong when quantized
    better: int  # wrong in the baseline, right when quantized
    n: int  # documents compared
    p_value: float


def binom_two_sided(k: int, n: int) -> float:
    """Exact two-sided p of k successes in n fair trials (scipy's binomtest, minlike method)."""
    if n == 0:
        return 1.0
    return float(sps.binomtest(k, n, 0.5, alternative="two-sided").pvalue)


def mcnemar(base: dict, quant: dict) -> McNemar:
    """Exact McNemar on per-document 0/1 correctness; `base`/`quant` are items metric dicts."""
    b, q = _aligned([base, quant])
    for name, v in (("baseline", b), ("quantized", q)):
        if not np.isin(v, (0.0, 1.0)).all():
            raise ValueError(f"McNemar needs 0/1 per-document values; the {name} items have others")
    worse = int(((b == 1) & (q == 0)).sum())
    better = int(((b == 0) & (q == 1)).sum())
    return McNemar(worse, better, len(b), binom_two_sided(min(worse, better), worse + better))


# ---- paired bootstrap ------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class Bootstrap:
    softmax: Interval  # rel degradation of softmax
    softpick: Interval
    difference: Interval  # rel(softpick) - rel(softmax)
    p_value: float  # two-sided, H0: difference = 0
    p_softmax: float  # two-sided, H0: softmax's rel = 0
    p_softpick: float
    n_items: int
    n_resamples: int
    seed: int


def _aligned(metrics: list[dict]) -> list[np.ndarray]:
    """The cells' values in one common item order; the cells must hold the same item ids."""
    ids = [list(m["ids"]) for m in metrics]
    first = ids[0]
    for other in ids[1:]:
        if sorted(map(str, other)) != sorted(map(str, first)):
            raise ValueError(f"cells are scored on different items ({len(first)} vs {len(other)} ids)")
    out = []
    for m, these in zip(metrics, ids):
        pos = {str(i): j for j, i in enumerate(these)}
        order = [pos[str(i)] for i in first]
        out.append(np.asarray(m["values"], dtype=np.float64)[order])
    return out


def resampled_metric(aggregation: str, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The metric of each resample; counts (B, n) say how often each item is drawn.

    Vectorised form of eval.items.aggregate over a multiset of items (tested against it).
    """
    n = counts.shape[1]
    if aggregation == "mean":
        return counts @ values / n
    if aggregation == "perplexity":
        return np.exp(-(counts @ values) / n)
    if aggregation in ("weighted_perplexity", "bits_per_byte"):
        loglik, weight = counts @ values[:, 0], counts @ values[:, 1]
        if aggregation == "weighted_perplexity":
            return np.exp(-loglik / weight)
        return -loglik / weight / math.log(2)
    raise ValueError(f"aggregation {aggregation!r} cannot be bootstrapped")


def _rel(base, quant, higher_is_better: bool):
    return (base - quant) / np.abs(base) if higher_is_better else (quant - base) / np.abs(base)


def paired_bootstrap(
    cells: dict[str, dict], higher_is_better: bool, n_resamples: int = N_RESAMPLES, seed: int = SEED
) -> Bootstrap:
    """Joint item resampling of the four CELLS (items metric dicts with one aggregation)."""
    aggregation = cells[CELLS[0]]["aggregation"]
    if any(cells[c]["aggregation"] != aggregation for c in CELLS):
        raise ValueError("the four cells aggregate the metric differently")
    values = dict(zip(CELLS, _aligned([cells[c] for c in CELLS])))
    n = len(values[CELLS[0]])
    observed = {c: aggregate(aggregation, values[c].tolist()) for c in CELLS}
    rng = np.random.default_rng(seed)
    draws = {c: [] for c in CELLS}
    for start in range(0, n_resamples, 256):  # chunks keep the (B, n) count matrix small
        b = min(256, n_resamples - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=b).astype(np.float64)
        for c in CELLS:
            draws[c].append(resampled_metric(aggregation, values[c], counts))
    draws = {c: np.concatenate(v) for c, v in draws.items()}
    rel_sm = _rel(draws["softmax_base"], draws["softmax_quant"], higher_is_better)
    rel_sp = _rel(draws["softpick_base"], draws["softpick_quant"], higher_is_better)
    diff = rel_sp - rel_sm
    est_sm = relative_degradation(observed["softmax_base"], observed["softmax_quant"], higher_is_better)
    est_sp = relative_degradation(observed["softpick_base"], observed["softpick_quant"], higher_is_better)
    return Bootstrap(
        softmax=_percentile(est_sm, rel_sm),
        softpick=_percentile(est_sp, rel_sp),
        difference=_percentile(est_sp - est_sm, diff),
        p_value=bootstrap_p(diff),
        p_softmax=bootstrap_p(rel_sm),
        p_softpick=bootstrap_p(rel_sp),
        n_items=n,
        n_resamples=n_resamples,
        seed=seed,
    )


def _percentile(estimate: float, draws: np.ndarray) -> Interval:
    alpha = (1 - LEVEL) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return Interval(float(estimate), float(low), float(high))


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided p for H0 "the statistic is 0": twice the smaller tail at 0, +1 smoothed."""
    b = len(draws)
    below = (np.sum(draws <= 0) + 1) / (b + 1)
    above = (np.sum(draws >= 0) + 1) / (b + 1)
    return float(min(1.0, 2 * min(below, above)))


# ---- replicates ------------------------------------------------------------------------------


def t_interval(values: list[float]) -> Interval:
    """Mean and 95% Student-t interval over replicates (needs >= 2 finite values)."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if len(x) < 2:
        raise ValueError(f"a t interval needs at least 2 replicates, got {len(x)}")
    mean = float(x.mean())
    half = float(sps.t.ppf(0.5 + LEVEL / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return Interval(mean, mean - half, mean + half)
