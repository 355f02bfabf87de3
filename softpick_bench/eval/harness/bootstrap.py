"""lm-eval's bootstrap stderr of `perplexity`, vectorised, bit for bit the same number.

lm-eval bootstraps the stderr of lambada_openai's perplexity: chunk i (of `iters // 1000`) draws
1000 resamples with `random.Random(i).choices(xs, k=len(xs))`, each becomes `perplexity` =
`math.exp(-(sum(r) / len(r)))`, and the stderr is `sample_stddev` of all of them. That is 33
CPU-seconds per cell on the H200 machine (results/bench/bootstrap-stderr-h200.md), the largest
part of a cell's metrics. Here the same resamples are drawn with numpy's MT19937, which seeds
from `[i]` as Python's `random` seeds from `i` and makes doubles the same way; the index is the
same `floor(random() * n)`; each resample is summed as Python's `sum` sums floats (left to right
before 3.12, Neumaier-compensated from 3.12); `math.exp` and lm-eval's own `sample_stddev` do the
rest; the chunks run on threads, one per CPU (numpy's loops release the GIL). Written here
because no library reproduces lm-eval's resampling stream. The 3.12 summation was checked
against CPython 3.12.1's and 3.13.0's own `sum` on 300 rows of mixed signs and magnitudes (by
hand, 2026-12-02; tests/test_bootstrap.py checks it against a transcription of CPython's loop).

Every call first recomputes a few resamples with lm-eval's own pool worker and compares them exactly;
on any difference (another Python's `sum`, another lm-eval) it uses lm-eval's own bootstrap for
that call, so the number recorded is always lm-eval's.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

log = logging.getLogger(__name__)

CHUNK = 1000  # lm-eval's resamples per seed (min(1000, iters))
NEUMAIER = sys.version_info >= (3, 12)  # CPython's float sum() compensates from 3.12 on
# Used only where it is faster than lm-eval's pool: the Neumaier emulation is a Python loop over
# the documents (GIL-bound), and on the H200 machine (Python 3.12, 16 CPUs) it took 11.2x the
# pool's 3.2 s (2026-12-02); the left-to-right sum is one numpy call (0.26x on 2 CPUs, 3.11).
FASTER = not NEUMAIER


def row_sums(values: np.ndarray) -> np.ndarray:
    """Python's `sum(row)` of each row of a 2-D float64 array, exactly."""
    if not NEUMAIER:
        return np.cumsum(values, axis=1)[:, -1]  # accumulate is strictly left to right
    return _neumaier_rows(values)


def _neumaier_rows(values: np.ndarray) -> np.ndarray:
    """CPython 3.12's float sum, row by row: 0 + x0, then Neumaier's compensated steps, the
    compensation added at the end when it is non-zero and finite."""
    cols = np.ascontiguousarray(values.T)
    total = cols[0] + 0.0
    comp = np.zeros_like(total)
    t, big, a, b = (np.empty_like(total) for _ in range(4))
    for x in cols[1:]:
        np.add(total, x, out=t)
        np.greater_equal(np.abs(total), np.abs(x), out=big)
        np.subtract(total, t, out=a)  # (total - t) + x, when |total| >= |x|
        a += x
        np.subtract(x, t, out=b)  # (x - t) + total, otherwise
        b += total
        comp += np.where(big, a, b)
        total, t = t, total
    fix = (comp != 0) & np.isfinite(comp)
    return np.where(fix, total + comp, total)


def perplexity_replicates(xs, seed: int, count: int) -> list[float]:
    """`count` replicates of lm-eval's `perplexity` on `random.Random(seed).choices(xs, k=len(xs))`."""
    values = np.asarray(xs, dtype=np.float64)
    n = len(values)
    u = np.random.RandomState([seed]).random_sample((count, n))  # row r: the draws of resample r
    index = np.floor(u * float(n)).astype(np.intp)
    del u
    means = row_sums(values[index]) / n
    return [math.exp(-m) for m in means.tolist()]


def _agrees(metrics, xs, chunks: int, probe: int = 3) -> bool:
    """Our replicates equal those of lm-eval's own pool worker (`_bootstrap_internal`), exactly,
    for the first resamples of the first and the last chunk."""
    internal = getattr(metrics, "_bootstrap_internal", None)
    if internal is None:  # another lm-eval: nothing to check against
        return False
    own = internal(metrics.perplexity, probe)
    return all(perplexity_replicates(xs, seed, probe) == own((seed, xs)) for seed in {0, chunks - 1})


def bootstrap_stderr(original, f, xs, iters: int) -> float:
    """lm-eval's `bootstrap_stderr(f, xs, iters)`: vectorised for `perplexity` over whole chunks,
    `original` otherwise."""
    from lm_eval.api import metrics

    if f is not metrics.perplexity or iters < CHUNK or iters % CHUNK or not xs or not FASTER:
        return original(f, xs, iters)
    chunks = iters // CHUNK
    xs = list(xs)
    if not _agrees(metrics, xs, chunks):
        log.warning("vectorised bootstrap differs from lm-eval's own here: using lm-eval's")
        return original(f, xs, iters)
    replicates: list[float] = []
    with ThreadPoolExecutor(min(chunks, _cpus())) as pool:  # numpy's loops release the GIL
        for chunk in pool.map(lambda seed: perplexity_replicates(xs, seed, CHUNK), range(chunks)):
            replicates += chunk  # in seed order, as lm-eval's pool returns them
    return metrics.sample_stddev(replicates)


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def vectorised_perplexity_stderr():
    """Within the block, lm-eval's stderr functions use `bootstrap_stderr` above (lm-eval looks
    the name up in its metrics module when a stderr is computed)."""
    from lm_eval.api import metrics

    original = metrics.bootstrap_stderr

    def patched(f, xs, iters):
        return bootstrap_stderr(original, f, xs, iters)

    metrics.bootstrap_stderr = patched
    try:
        yield
    finally:
        metrics.bootstrap_stderr = original
