"""The vectorised bootstrap stderr of perplexity gives lm-eval's own number, exactly."""

import math
import random

import numpy as np
import pytest
from lm_eval.api import metrics

from softpick_bench.eval.harness import bootstrap


def _lls(n: int, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [-rng.expovariate(0.3) for _ in range(n)]


def _cpython312_sum(row) -> float:
    """CPython 3.12's float `sum`, transcribed: 0 + x0, Neumaier steps, the compensation at the end."""
    total, comp = 0 + row[0], 0.0
    for x in row[1:]:
        t = total + x
        comp += (total - t) + x if abs(total) >= abs(x) else (x - t) + total
        total = t
    return total + comp if comp and math.isfinite(comp) else total


def test_row_sums_are_pythons_sum_and_the_312_algorithm():
    rng = np.random.default_rng(0)
    values = rng.standard_normal((60, 301)) * rng.choice([1e-8, 1.0, 1e8, 1e16], size=(60, 301))
    rows = values.tolist()
    assert bootstrap.row_sums(values).tolist() == [sum(r) for r in rows]  # this interpreter's own sum
    assert bootstrap._neumaier_rows(values).tolist() == [_cpython312_sum(r) for r in rows]
    assert np.cumsum(values, axis=1)[:, -1].tolist() == [_left_to_right(r) for r in rows]  # before 3.12


def _left_to_right(row) -> float:
    total = 0.0
    for x in row:
        total += x
    return total


def test_replicates_are_lm_evals_resamples():
    xs = _lls(257)
    for seed in (0, 1, 99):  # lm-eval's own pool worker: seed, then 20 resamples of `perplexity`
        expected = metrics._bootstrap_internal(metrics.perplexity, 20)((seed, xs))
        assert bootstrap.perplexity_replicates(xs, seed, 20) == expected


@pytest.mark.parametrize("n,iters", [(1, 1000), (300, 3000)])
def test_stderr_equals_lm_evals_bootstrap_exactly(monkeypatch, n, iters):
    xs = _lls(n, seed=n)
    monkeypatch.setenv("DISABLE_MULTIPROC", "1")  # lm-eval's single-process path: the same seeds and draws
    monkeypatch.setattr(bootstrap, "FASTER", True)  # the vectorised path on every Python
    expected = metrics.bootstrap_stderr(metrics.perplexity, xs, iters=iters)
    with bootstrap.vectorised_perplexity_stderr():
        got = metrics.bootstrap_stderr(metrics.perplexity, xs, iters=iters)
        assert metrics.bootstrap_stderr.__module__ == bootstrap.__name__  # lm-eval's stderr functions now use ours
    assert got == expected
    assert metrics.bootstrap_stderr.__module__ == "lm_eval.api.metrics"  # restored


def test_other_metrics_and_a_disagreement_use_lm_evals_own(monkeypatch):
    calls = []

    def original(f, xs, iters):
        calls.append(f)
        return -1.0

    xs = _lls(50)
    assert bootstrap.bootstrap_stderr(original, metrics.median, xs, 1000) == -1.0  # not perplexity
    assert bootstrap.bootstrap_stderr(original, metrics.perplexity, xs, 1500) == -1.0  # not whole chunks
    monkeypatch.setattr(bootstrap, "row_sums", lambda values: np.cumsum(values, axis=1)[:, -1] + 1e-9)
    assert bootstrap.bootstrap_stderr(original, metrics.perplexity, xs, 1000) == -1.0  # the probe caught it
    assert calls == [metrics.median, metrics.perplexity, metrics.perplexity]


def test_where_it_is_slower_lm_evals_own_runs(monkeypatch):
    """Python 3.12+ (FASTER false): lm-eval's pool, measured faster than the Neumaier emulation."""
    monkeypatch.setattr(bootstrap, "FASTER", False)
    monkeypatch.setattr(bootstrap, "_agrees", lambda *a: pytest.fail("the vectorised path was entered"))
    assert bootstrap.bootstrap_stderr(lambda f, xs, iters: -2.0, metrics.perplexity, _lls(50), 1000) == -2.0
