"""Overhead of the `process` and `ray` executors against `local` (issue 14): one sweep command each.

    python benchmarks/executors.py configs/gpu-smoke.yaml --out results/bench/executors-h200.md
    python benchmarks/executors.py configs/smoke.yaml --repeats 1 --out /tmp/executors-cpu.md   # CPU smoke run

Each executor runs `softpick-bench sweep CONFIG --executor E` as its own command into an empty
folder, so the wall-clock includes what a user waits for: imports, planning, (for ray) starting and
stopping a local instance, every unit's load, quantization and evaluation, and the report. The runs
go round-robin (local, process, ray, local, ...) so that a warming disk or GPU favours none; the
table gives each executor's median and its overhead against local's median from the same run.
Every executor's results.csv must hold local's values exactly, or the benchmark fails.
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
    command = [sys.executable, "-m", "softpick_bench.cli", "sweep", config, "--out", str(folder), "--executor", executor]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{executor}: the sweep failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds


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
    try:
        for r in range(args.repeats):
            for executor in executors:
                folder = work / f"{executor}-{r}"
                times[executor].append(run_once(args.config, executor, folder))
                got = values(folder)
                if reference is None:
                    reference = got
                elif not got.equals(reference):
                    raise SystemExit(f"{executor} (repeat {r}): results.csv differs from local's")
                print(f"repeat {r} {executor}: {times[executor][-1]:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(times["local"])
    lines = [f"# Executor overhead: `{args.config}` ({machine()})", "",
             f"{args.repeats} runs of each, round-robin; {len(reference)} metric values, identical across executors.", "",
             "| executor | median wall-clock (s) | runs (s) | overhead vs local |", "|---|---:|---|---:|"]
    for e in executors:
        med = statistics.median(times[e])
        runs = ", ".join(f"{t:.1f}" for t in times[e])
        lines.append(f"| {e} | {med:.1f} | {runs} | {100 * (med / base - 1):+.1f}% |")
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
