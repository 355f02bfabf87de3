"""Paired statistics against plain references: brute-force binomial sums, explicit resamples,
synthetic data with a known effect (coverage) and null cases."""

import math

import numpy as np
import pytest

from softpick_bench.eval.items import aggregate, metric_items
from softpick_bench.report import stats


def _brute_binom_p(k: int, n: int) -> float:
    """Sum of the probabilities of every outcome no more likely than k (the exact two-sided test)."""
    probs = [math.comb(n, i) / 2**n for i in range(n + 1)]
    return min(1.0, sum(p for p in probs if p <= probs[k] * (1 + 1e-7)))


@pytest.mark.parametrize("n", [0, 1, 2, 5, 12, 31])
def test_exact_binomial_matches_brute_force(n):
    for k in range(n + 1):
        assert stats.binom_two_sided(k, n) == pytest.approx(_brute_binom_p(k, n) if n else 1.0, rel=1e-9)


def test_mcnemar_counts_discordant_documents_by_id():
    base = metric_items("mean", ["a", "b", "c", "d", "e", "f"], [1, 1, 1, 0, 0, 1])
    # same documents in another order: a->0, b->0, c->1, d->1, e->0, f->0
    quant = metric_items("mean", ["f", "e", "d", "c", "b", "a"], [0, 0, 1, 1, 0, 0])
    m = stats.mcnemar(base, quant)
    assert (m.worse, m.better, m.n) == (3, 1, 6)
    assert m.p_value == pytest.approx(_brute_binom_p(1, 4))
    with pytest.raises(ValueError, match="0/1"):
        stats.mcnemar(metric_items("mean", [0], [0.5]), metric_items("mean", [0], [1.0]))
    with pytest.raises(ValueError, match="different items"):
        stats.mcnemar(metric_items("mean", [0, 1], [1, 0]), metric_items("mean", [0, 2], [1, 0]))


@pytest.mark.parametrize("aggregation", ["mean", "perplexity", "weighted_perplexity", "bits_per_byte"])
def test_resampled_metric_matches_aggregate_on_explicit_resamples(aggregation):
    rng = np.random.default_rng(1)
    n = 17
    if aggregation in ("weighted_perplexity", "bits_per_byte"):
        values = np.stack([-rng.uniform(50, 200, n), rng.integers(20, 60, n).astype(float)], axis=1)
    else:
        values = -rng.uniform(0, 5, n) if aggregation == "perplexity" else rng.integers(0, 2, n).astype(float)
    for _ in range(5):
        idx = rng.integers(0, n, n)
        counts = np.bincount(idx, minlength=n)[None].astype(float)
        got = stats.resampled_metric(aggregation, values, counts)[0]
        assert got == pytest.approx(aggregate(aggregation, values[idx].tolist()), rel=1e-12)


def _accuracy_cells(rng, n, p_base, p_sm, p_sp):
    """Per-document correctness: each quantized model keeps a document right with a set probability."""
    base_sm = (rng.random(n) < p_base).astype(float)
    base_sp = (rng.random(n) < p_base).astype(float)
    q_sm = base_sm * (rng.random(n) < p_sm / p_base)
    q_sp = base_sp * (rng.random(n) < p_sp / p_base)
    ids = list(range(n))
    return {c: metric_items("mean", ids, v) for c, v in zip(stats.CELLS, (base_sm, q_sm, base_sp, q_sp))}


def test_bootstrap_interval_covers_a_known_difference():
    """True rel: softmax (0.6-0.5)/0.6, softpick (0.6-0.57)/0.6; the 95% interval covers it ~95% of the time."""
    true_diff = (0.6 - 0.57) / 0.6 - (0.6 - 0.5) / 0.6
    rng = np.random.default_rng(0)
    covered, significant = 0, 0
    reps = 60
    for r in range(reps):
        b = stats.paired_bootstrap(_accuracy_cells(rng, 600, 0.6, 0.5, 0.57), True, n_resamples=400, seed=r)
        covered += b.difference.low <= true_diff <= b.difference.high
        significant += b.p_value < 0.05
        assert b.n_items == 600 and b.n_resamples == 400
    assert covered / reps >= 0.85  # nominal 0.95; binomial spread over 60 draws
    assert significant / reps >= 0.8  # the effect (-0.117) is large against its spread (~0.035)


def test_bootstrap_null_case():
    rng = np.random.default_rng(3)
    rejections = 0
    for r in range(60):
        b = stats.paired_bootstrap(_accuracy_cells(rng, 400, 0.6, 0.55, 0.55), True, n_resamples=400, seed=r)
        rejections += b.p_value < 0.05
    assert rejections / 60 <= 0.15  # nominal 0.05
    # identical cells for both kinds: the difference is exactly zero in every resample
    cells = _accuracy_cells(rng, 200, 0.6, 0.5, 0.5)
    same = {"softmax_base": cells["softmax_base"], "softmax_quant": cells["softmax_quant"],
            "softpick_base": cells["softmax_base"], "softpick_quant": cells["softmax_quant"]}
    b = stats.paired_bootstrap(same, True, n_resamples=200)
    assert (b.difference.estimate, b.difference.low, b.difference.high, b.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_perplexity_estimates_and_sign():
    """Windows' (loglik, tokens): softpick's quantized NLL rises less; its rel is lower (negative difference)."""
    rng = np.random.default_rng(5)
    n, tokens = 64, 255.0
    nll = rng.uniform(4.0, 6.0, n)
    ids = list(range(n))

    def cell(per_token_nll):
        return metric_items("weighted_perplexity", ids, [[-x * tokens, tokens] for x in per_token_nll])

    cells = {"softmax_base": cell(nll), "softmax_quant": cell(nll + 0.2 + rng.normal(0, 0.02, n)),
             "softpick_base": cell(nll), "softpick_quant": cell(nll + 0.05 + rng.normal(0, 0.02, n))}
    b = stats.paired_bootstrap(cells, higher_is_better=False, n_resamples=500, seed=1)
    ppl = {c: aggregate("weighted_perplexity", cells[c]["values"]) for c in cells}
    assert b.softmax.estimate == pytest.approx((ppl["softmax_quant"] - ppl["softmax_base"]) / ppl["softmax_base"])
    assert b.softmax.estimate == pytest.approx(math.exp(0.2) - 1, abs=0.01)
    assert b.difference.high < 0 and b.p_value < 0.01
    assert b.softmax.low <= b.softmax.estimate <= b.softmax.high


def test_relative_degradation_is_positive_when_worse():
    assert stats.relative_degradation(10.0, 12.0, higher_is_better=False) == pytest.approx(0.2)
    assert stats.relative_degradation(0.5, 0.4, higher_is_better=True) == pytest.approx(0.2)
    assert stats.relative_degradation(0.5, 0.6, higher_is_better=True) == pytest.approx(-0.2)


def test_t_interval_matches_the_t_table():
    # t(0.975; 1) = 12.706, t(0.975; 2) = 4.303 (standard tables, 3 decimals)
    two = stats.t_interval([1.0, 3.0])
    assert (two.estimate, two.high - two.estimate) == (2.0, pytest.approx(12.706, abs=5e-4))
    three = stats.t_interval([1.0, 2.0, 6.0])
    se = np.std([1.0, 2.0, 6.0], ddof=1) / math.sqrt(3)
    assert three.estimate == 3.0 and three.low == pytest.approx(3.0 - 4.303 * se, abs=5e-4 * se)
    with pytest.raises(ValueError, match="at least 2"):
        stats.t_interval([1.0])
