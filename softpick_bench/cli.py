"""Command line: `softpick-bench sweep CONFIG --out DIR`, `report DIR`, `regress DIR`, `train`, `list`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path

from softpick_bench.errors import SoftpickBenchError


PLAN_LISTING_MAX = 24  # plans up to this size are listed cell by cell
BNB_LOGGER = "bitsandbytes.backends.cpu.ops"  # warns at import (CPU gemm kernel from the hub) on some CPUs


class _HeldWarnings(logging.Filter):
    """Holds back bitsandbytes' import-time warning; it is replayed only if a bnb cell will run.

    bitsandbytes is imported when the plan is built (every backend is loaded to check its cells), before
    anyone knows whether bnb runs, so the warning cannot be avoided, only deferred.
    """

    def __init__(self):
        super().__init__()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.held.append(record)
        return False

    def replay(self) -> None:
        logger = logging.getLogger(BNB_LOGGER)
        logger.removeFilter(self)
        for record in self.held:
            logger.callHandlers(record)  # past the logger's filters (this one may be attached twice)
        self.held.clear()


HELD = _HeldWarnings()


def _print_plan(cells, is_done) -> list[dict]:
    """Print the plan: every cell when it is small, else counts and a short list of what will run."""
    from collections import Counter

    skipped, states = [], []
    for cell in cells:
        if cell.error:
            state = f"ERROR: {cell.error}"
        elif cell.skip_reason:
            state = f"SKIPPED: {cell.skip_reason}"
            skipped.append({"cell": cell.describe(), "key": cell.key, "reason": cell.skip_reason})
        else:
            state = "done" if is_done(cell.key) else "to run"
        states.append(state)
    counts = Counter("skipped" if s.startswith("SKIPPED") else s for s in states)
    print(f"plan: {len(cells)} cells ({counts['to run']} to run, {counts['done']} done before, "
          f"{counts['skipped']} skipped)")
    if len(cells) <= PLAN_LISTING_MAX:
        for cell, state in zip(cells, states):
            print(f"  {cell.key[:10]}  {cell.describe():<60} {state}")
        return skipped
    axes = {"pairs": {c.pair for c in cells}, "quant specs": {c.quant.label() for c in cells},
            "tasks": {c.task.name for c in cells}}
    print("  " + "; ".join(f"{k}: {len(v)}" for k, v in axes.items()) + f" ({', '.join(sorted(axes['tasks']))})")
    todo = [c for c, s in zip(cells, states) if s == "to run"]
    for cell in todo[:8]:
        print(f"  to run  {cell.describe()}")
    if len(todo) > 8:
        print(f"  ... and {len(todo) - 8} more to run")
    for s in skipped:
        print(f"  skipped {s['cell']}: {s['reason']}")
    return skipped


class _Progress:
    """The runner's per-cell lines above a progress bar with an ETA (tqdm, on stderr)."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="cell", desc="sweep", dynamic_ncols=True, disable=total == 0)

    def __call__(self, line: str) -> None:
        self.bar.write(line)
        if line.startswith("["):  # "[i/total] cell: ..." marks a finished (or failed) cell
            self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def cmd_sweep(args) -> int:
    from softpick_bench.config import load_config
    from softpick_bench.sweep.shard import parse_shard, shard_cells

    start = time.perf_counter()
    shard = parse_shard(args.shard) if args.shard else None
    config = load_config(args.config, allow_large_plan=args.allow_large_plan)
    out = Path(args.out or Path("runs") / config.name)
    worker = actors = None  # started now, so that their imports overlap the planning below
    if args.executor == "process" and not args.plan_only:
        from softpick_bench.sweep.workers import Worker

        worker = Worker(config.device, str(out))
    elif args.executor == "ray" and not args.plan_only:
        from softpick_bench.sweep.workers import RayActors

        actors = RayActors(config.device, args.ray_address, args.ray_cpus)
    try:
        return _sweep(args, config, out, shard, start, worker, actors)
    finally:  # no-ops once the executor stopped them
        if worker is not None:
            worker.stop()
        if actors is not None:
            actors.shutdown()


def _sweep(args, config, out: Path, shard, start: float, worker, actors) -> int:
    from softpick_bench.sweep.plan import build_plan, plan_manifest  # heavy (models, quant): after validation

    cells = build_plan(config)
    if args.plan_only:  # validate and print; nothing is written
        from softpick_bench.sweep.store import ResultStore

        is_done = ResultStore(out).is_done if (out / "cells").is_dir() else (lambda key: False)
        _print_plan(cells, is_done)
        return 0
    from softpick_bench.report import write_report
    from softpick_bench.sweep.claims import Claims
    from softpick_bench.sweep.executors import run_sweep
    from softpick_bench.sweep.store import ResultStore

    store = ResultStore(out)
    _print_plan(cells, store.is_done)
    store.write_meta("plan.json", plan_manifest(config, cells))
    if shard:
        cells = shard_cells(cells, *shard)
    if any(c.quant.method == "bnb" and not c.skip_reason and not store.is_done(c.key) for c in cells):
        HELD.replay()
    progress = _Progress(sum(1 for c in cells if not c.skip_reason and not store.is_done(c.key)))
    claims = Claims(out)
    cells_start = time.perf_counter()
    try:
        counts = run_sweep(config, cells, store, progress, claims, args.executor, args.ray_address, args.ray_cpus,
                           worker, actors)
    finally:
        claims.release_all()
        progress.close()
    cells_end = time.perf_counter()
    for note in claims.taken_over:
        print(note)
    elsewhere = (f", {counts['claimed_elsewhere']} claimed elsewhere (another sweep is computing them)"
                 if counts["claimed_elsewhere"] else "")
    print(
        f"\n{counts['ran']} cells ran, {counts['done_before']} already done (not recomputed), "
        f"{counts['skipped']} skipped, {counts['failed']} failed{elsewhere} in {time.perf_counter() - start:.1f}s"
    )
    if counts["claimed_elsewhere"]:  # the report waits for the other sweep's cells
        print(f"when the other sweep is done: softpick-bench report {out}")
        return 1 if counts["failed"] else 0
    if shard:  # other shards may still be writing: the report comes once all are done
        print(f"shard {args.shard} done; when every shard is: softpick-bench report {out}")
        return 1 if counts["failed"] else 0
    print(write_report(out).summary())
    # where this invocation's wall time went (the benchmark splits its bookkeeping with it)
    phases = {"startup_and_plan_s": cells_start - start, "cells_s": cells_end - cells_start,
              "report_s": time.perf_counter() - cells_end}
    if counts["ran"] or counts["failed"]:  # a finished sweep re-run writes nothing (its folder may be read-only)
        store.write_meta("sweep-phases.json", phases)
    print("sweep phases: " + ", ".join(f"{k[:-2].replace('_', ' ')} {v:.1f}s" for k, v in phases.items()))
    return 1 if counts["failed"] else 0


def cmd_report(args) -> int:
    from softpick_bench.report import write_report

    print(write_report(args.out, plots=not args.no_plots).summary())
    return 0


def cmd_regress(args) -> int:
    import pandas as pd

    from softpick_bench.report import write_report
    from softpick_bench.report.regress import compare, failures, render

    write_report(args.out, plots=False)
    current = pd.read_csv(Path(args.out) / "results.csv")
    baseline = pd.read_csv(args.baseline)
    if args.metric:  # threshold metrics (sink rates) can flip on rounding; pick the continuous ones
        current = current[current.metric.isin(args.metric)]
        baseline = baseline[baseline.metric.isin(args.metric)]
    findings = compare(current, baseline, args.rtol)
    print(render(findings, args.rtol, len(baseline)))
    return 1 if failures(findings) else 0


def cmd_list(args) -> int:
    from softpick_bench.config import ACT_BITS, ACT_GRANULARITIES, KV_GRANULARITIES, PROBS_BITS, SUITE_BITS
    from softpick_bench.eval.tasks import get_task, task_names
    from softpick_bench.quant.base import get_backend, methods

    print("quantization methods (quant: entries; every method takes group_size: null | N, and skip: [...]):")
    for name in methods():
        if name == "none":
            print("  none      the unquantized baseline (always in the plan); combine with the modifiers below")
            continue
        b = get_backend(name)
        if not b.supports_asymmetric:
            sym = "symmetric: true only"
        else:
            sym = "symmetric: true | false" if b.supports_symmetric else "symmetric: false only"
        grids = f"; symmetric grid {' | '.join(b.grids)}" if len(b.grids) > 1 else ""
        extra = "; needs calibration text" if b.needs_calibration else ""
        print(f"  {name:<9} bits {sorted(b.bits)}; {sym}{grids}; devices {sorted(b.devices)}{extra}")
        for opt, text in sorted(b.options.items()):
            print(f"            option {opt}: {text}")
    print("modifiers (combine with any method, none included):")
    print(f"  act_bits  {list(ACT_BITS)}: fake-quantize every quantized linear layer's input; "
          f"act_granularity {' | '.join(ACT_GRANULARITIES)}")
    print(f"  kv_bits   {list(SUITE_BITS)}: keys and values quantized inside attention; "
          f"kv_granularity {' | '.join(KV_GRANULARITIES)}")
    print(f"  probs_bits {list(PROBS_BITS)}: attention weights quantized before they multiply V")
    from softpick_bench.quant.listing import axis_lines

    print("quant spec axes (transforms, activation formats, KV keep-first):")
    for line in axis_lines():
        print(f"  {line}")
    print("tasks (tasks: entries):")
    for name in task_names():
        t = get_task(name)
        print(f"  {name:<16} {t.description}")
        for opt, o in sorted(t.options.items()):
            print(f"                   option {opt} (default {o.default!r}): {o.help}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="softpick-bench", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sweep", help="run a sweep config; finished cells are never recomputed")
    p.add_argument("config", help="sweep YAML (see configs/)")
    p.add_argument("--out", help="result folder (default runs/<name>)")
    p.add_argument("--plan-only", action="store_true", help="validate and print the plan, run nothing")
    p.add_argument("--allow-large-plan", action="store_true", help="accept a plan of more than 5000 cells")
    p.add_argument("--shard", metavar="I/N", help="run only every N-th unit (checkpoint x quant spec), from the I-th")
    p.add_argument("--executor", choices=("local", "process", "ray"), default="local",
                   help="where units run: this process (default), a child process per unit (a crash fails "
                        "only its unit), or Ray tasks")
    p.add_argument("--ray-address", help="with --executor ray: join this cluster (e.g. auto, or HOST:6379); "
                                        "default: start a local one")
    p.add_argument("--ray-cpus", type=int, help="with --executor ray and no address: CPUs of the local cluster")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("report", help="write results.csv, report.md and plots for a result folder")
    p.add_argument("out", help="result folder written by `sweep`")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("regress", help="compare a result folder with a baseline results.csv (CI)")
    p.add_argument("out", help="result folder written by `sweep`")
    p.add_argument("--baseline", required=True, help="baseline results.csv (e.g. results/baseline/smoke.csv)")
    p.add_argument("--rtol", type=float, default=1e-3, help="largest relative change that passes")
    p.add_argument("--metric", action="append", help="compare only this metric (repeatable; default all)")
    p.set_defaults(func=cmd_regress)
    p = sub.add_parser("list", help="list quantization methods and tasks")
    p.set_defaults(func=cmd_list)
    for module in ("softpick_bench.train.command",):
        try:
            importlib.import_module(module).add_parser(sub)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise  # a missing dependency inside the module is a real error
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger(BNB_LOGGER).addFilter(HELD)
    try:
        return args.func(args)
    except SoftpickBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
