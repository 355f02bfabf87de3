"""What lm-eval's bootstrap stderr costs: the perplexity stderr of one lambada_openai cell (issue 10).

    python benchmarks/bootstrap_stderr.py --out results/bench/bootstrap-stderr-h200.md

lm-eval bootstraps the stderr of `perplexity` (lambada_openai's second metric) with
`bootstrap_iters` resamples (100000 by default, as in `simple_evaluate`), in chunks of 1000 over
a `multiprocessing.Pool(mp.cpu_count())` made for each call. A CPU profile of one micro-model
cell (2 cores) put 118 s of its 200 s there. This times that call alone, with lambada_openai's
5153 documents of synthetic log-likelihoods, in a process of its own (no model, no CUDA), and the
single-process path (DISABLE_MULTIPROC) on fewer resamples, scaled: the CPU seconds the stderr
needs wherever it runs; then softpick-bench's vectorised copy (eval/harness/bootstrap.py), whose
number must equal lm-eval's exactly. It also prints the CPU counts the pool size comes from.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
from lm_eval.api import metrics

from softpick_bench.eval.harness import bootstrap

LAMBADA_DOCS = 5153


def timed(xs: list[float], iters: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    value = metrics.bootstrap_stderr(metrics.perplexity, xs, iters=iters)
    return time.perf_counter() - t0, value


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=100000, help="lm-eval's default bootstrap_iters")
    p.add_argument("--single-iters", type=int, default=5000, help="resamples for the single-process run")
    p.add_argument("--out")
    args = p.parse_args()
    rng = random.Random(0)
    xs = [-rng.expovariate(0.25) for _ in range(LAMBADA_DOCS)]  # log-likelihoods of a weak model
    pool_s, value = timed(xs, args.iters)
    t0 = time.perf_counter()
    ours = bootstrap.bootstrap_stderr(metrics.bootstrap_stderr, metrics.perplexity, xs, args.iters)
    ours_s = time.perf_counter() - t0
    if ours != value:
        raise SystemExit(f"the vectorised stderr {ours!r} differs from lm-eval's {value!r}")
    os.environ["DISABLE_MULTIPROC"] = "1"
    single_s, _ = timed(xs, args.single_iters)
    chunk = np.asarray(xs)[np.random.RandomState([0]).randint(0, LAMBADA_DOCS, (bootstrap.CHUNK, LAMBADA_DOCS))]
    sum_s = {name: best_of(3, lambda: fn(chunk)) for name, fn in
             [("left to right (np.cumsum, Python < 3.12)", lambda v: np.cumsum(v, axis=1)),
              ("Neumaier (Python >= 3.12)", bootstrap._neumaier_rows)]}
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    per_iter = single_s / args.single_iters
    lines = [
        f"# lm-eval bootstrap stderr of perplexity, {LAMBADA_DOCS} documents ({platform.node() or 'host'})", "",
        f"python {platform.python_version()}, lm-eval's pool size mp.cpu_count() = {mp.cpu_count()},"
        f" CPUs this process may use (sched_getaffinity) = {affinity}.", "",
        "| run | resamples | seconds | CPU-seconds per 100000 resamples |", "|---|---:|---:|---:|",
        f"| lm-eval's pool (as in a sweep) | {args.iters} | {pool_s:.2f} | |",
        f"| one process (DISABLE_MULTIPROC) | {args.single_iters} | {single_s:.2f} | {per_iter * 1e5:.1f} |",
        f"| softpick-bench's vectorised copy (eval/harness/bootstrap.py), a thread per CPU | {args.iters} | {ours_s:.2f}"
        " | |",
        "", f"The vectorised copy's summation of one chunk ({bootstrap.CHUNK} resamples), one thread, best of 3"
        f" (this Python uses {'Neumaier' if bootstrap.NEUMAIER else 'left to right'}):", "",
        "| summation | seconds per chunk |", "|---|---:|",
        *[f"| {name} | {sec:.3f} |" for name, sec in sum_s.items()],
        "", f"stderr value: {value!r} from both lm-eval's pool and the vectorised copy (compared exactly);"
        f" the vectorised copy took {ours_s / pool_s:.2f}x the pool's time in this run.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
