"""Overhead of the `process` and `ray` executors against `local` (issue 14): one sweep command each.

    python benchmarks/executors.py configs/gpu-smoke.yaml --out results/bench/executors-h200.md
    python benchmarks/executors.py configs/smoke.yaml --repeats 1 --out /tmp/executors-cpu.md   # CPU smoke run

Each executor runs `softpick-bench sweep CONFIG --executor E` as its own command into an empty
folder, so the wall-clock includes what a user waits for: imports, planning, (for ray) starting and
stopping a local instance, every unit's load, quantization and evaluation, and the report. The runs
go round-robin (local, process, ray, local, ...) so that a warming disk or GPU favours none; the
table gives each executor's median and its overhead against local's median from the same run.
Every executor's results.csv must hold local's values exactly: one that fails, or differs, is
reported as failed (with its output) and the others go on.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_throughput import machine  # noqa: E402

KEY = ["pair", "kind", "replicate", "quant", "task", "metric"]


def run_once(config: str, executor: str, folder: Path) -> float:
    """The sweep's wall-clock; ExecutorFailed if it did not exit 0."""
    command = [sys.executable, "-m", "softpick_bench.cli", "sweep", config, "--out", str(folder), "--executor", executor]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise ExecutorFailed(f"exit {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds


class ExecutorFailed(Exception):
    pass


def values(folder: Path) -> pd.Series:
    df = pd.read_csv(folder / "results.csv")
    return df.set_index(KEY)["value"].sort_index()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", help="write the table here too (markdown)")
    args = p.parse_args()
    executors = ["local", "process"] + (["ray"] if importable("ray") else [])
    times: dict[str, list[float]] = {e: [] for e in executors}
    work = Path(tempfile.mkdtemp(prefix="executors-"))
    reference = None
    failed: dict[str, str] = {}  # an executor that failed once is dropped from later rounds, the others go on
    try:
        for r in range(args.repeats):
            for executor in [e for e in executors if e not in failed]:
                folder = work / f"{executor}-{r}"
                try:
                    times[executor].append(run_once(args.config, executor, folder))
                except ExecutorFailed as exc:
                    if executor == "local":
                        raise SystemExit(f"local: the sweep failed ({exc})") from None
                    failed[executor] = str(exc)
                    print(f"repeat {r} {executor}: FAILED, {exc}", flush=True)
                    continue
                got = values(folder)
                if reference is None:
                    reference = got
                elif not got.equals(reference):
                    failed[executor] = f"repeat {r}: results.csv differs from local's"
                    times[executor].pop()
                print(f"repeat {r} {executor}: {times[executor][-1]:.1f} s" if executor not in failed
                      else f"repeat {r} {executor}: {failed[executor]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(times["local"])
    lines = [f"# Executor overhead: `{args.config}` ({machine()})", "",
             f"{args.repeats} runs of each, round-robin; {len(reference)} metric values, each executor with a time gave local's exactly.", "",
             "| executor | median wall-clock (s) | runs (s) | overhead vs local |", "|---|---:|---|---:|"]
    for e in executors:
        if e in failed:
            lines.append(f"| {e} | failed | {', '.join(f'{t:.1f}' for t in times[e])} | |")
            continue
        med = statistics.median(times[e])
        runs = ", ".join(f"{t:.1f}" for t in times[e])
        lines.append(f"| {e} | {med:.1f} | {runs} | {100 * (med / base - 1):+.1f}% |")
    for e, why in failed.items():
        lines += ["", f"**{e} failed**, so its row has no overhead:", "", "```", why.strip()[-2500:], "```"]
    if "ray" not in executors:
        lines += ["", "ray is not installed here: `pip install -e \".[ray]\"`."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


def importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(main())
