"""Command line: `softpick-bench sweep CONFIG --out DIR`, `report DIR`, `regress DIR`, `train`, `list`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from pathlib import Path

from softpick_bench.errors import SoftpickBenchError


def _print_plan(cells, store) -> list[dict]:
    skipped = []
    print(f"plan: {len(cells)} cells")
    for cell in cells:
        if cell.error:
            state = f"ERROR: {cell.error}"
        elif cell.skip_reason:
            state = f"SKIPPED: {cell.skip_reason}"
            skipped.append({"cell": cell.describe(), "key": cell.key, "reason": cell.skip_reason})
        else:
            state = "done" if store.is_done(cell.key) else "to run"
        print(f"  {cell.key[:10]}  {cell.describe():<60} {state}")
    return skipped


def cmd_sweep(args) -> int:
    from softpick_bench.config import load_config
    from softpick_bench.report import write_report
    from softpick_bench.sweep.plan import build_plan, plan_manifest
    from softpick_bench.sweep.runner import run_plan
    from softpick_bench.sweep.shard import parse_shard, shard_cells
    from softpick_bench.sweep.store import ResultStore

    start = time.perf_counter()
    shard = parse_shard(args.shard) if args.shard else None
    config = load_config(args.config, allow_large_plan=args.allow_large_plan)
    out = Path(args.out or Path("runs") / config.name)
    store = ResultStore(out)
    cells = build_plan(config)
    _print_plan(cells, store)
    store.write_meta("plan.json", plan_manifest(config, cells))
    if args.plan_only:
        return 0
    if shard:
        cells = shard_cells(cells, *shard)
    counts = run_plan(config, cells, store)
    print(
        f"\n{counts['ran']} cells ran, {counts['done_before']} already done (not recomputed), "
        f"{counts['skipped']} skipped, {counts['failed']} failed in {time.perf_counter() - start:.1f}s"
    )
    if args.shard:  # other shards may still be writing: the report comes once all are done
        print(f"shard {args.shard} done; when every shard is: softpick-bench report {out}")
        return 1 if counts["failed"] else 0
    print(write_report(out))
    print(f"results: {out / 'results.csv'}, {out / 'report.md'}")
    return 1 if counts["failed"] else 0


def cmd_report(args) -> int:
    from softpick_bench.report import write_report

    print(write_report(args.out, plots=not args.no_plots))
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
    from softpick_bench.eval.tasks import get_task, task_names
    from softpick_bench.quant.base import get_backend, methods

    print("quantization methods:")
    for name in methods():
        if name == "none":
            print("  none      the unquantized baseline")
            continue
        b = get_backend(name)
        grids = f"; symmetric grid {'|'.join(b.grids)}" if len(b.grids) > 1 else ""
        print(
            f"  {name:<9} bits {sorted(b.bits)}{grids}; options {sorted(b.options) or '-'}; devices {sorted(b.devices)}"
        )
    print("tasks:")
    for name in task_names():
        t = get_task(name)
        print(f"  {name:<16} {t.description}; options {sorted(t.options)}")
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
    try:
        return args.func(args)
    except SoftpickBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
