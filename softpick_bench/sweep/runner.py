"""Run a plan: load each checkpoint once, make one quantized copy at a time, evaluate, store.

A failing quantization or task is written as an error record for its cells and the
sweep goes on; finished cells are on disk before the next one starts.
"""

from __future__ import annotations

import copy
import gc
import logging
import resource
import time
import traceback
from collections import defaultdict
from dataclasses import asdict

import torch

from softpick_bench.config import SweepConfig
from softpick_bench.eval.tasks import EvalTarget, run_task
from softpick_bench.models.checkpoint import load_checkpoint
from softpick_bench.quant.apply import quantize
from softpick_bench.quant.base import QuantContext
from softpick_bench.sweep import checks
from softpick_bench.sweep.plan import Cell, package_versions
from softpick_bench.sweep.store import ResultStore

log = logging.getLogger(__name__)


def _peak_memory(device: str) -> dict:
    """Peak memory: the GPU allocator's peak for this cell, or the process's peak RSS on CPU."""
    if device.startswith("cuda"):
        return {"peak_gpu_bytes": int(torch.cuda.max_memory_allocated())}
    return {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def _base_record(cell: Cell, config: SweepConfig) -> dict:
    return {
        "key": cell.key,
        "sweep": config.name,
        "pair": cell.pair,
        "kind": cell.kind,
        "checkpoint": cell.checkpoint,
        "checkpoint_given": cell.checkpoint_given,
        "replicate": cell.replicate,
        "fingerprint": cell.fingerprint,
        "quant": cell.quant.to_dict(),
        "quant_label": cell.quant.label(),
        "task": cell.task.to_dict(),
        "versions": package_versions(cell.quant, cell.task),
        "dtype": config.dtype,
        "device": config.device,
        "seed": config.seed,
    }


def run_plan(config: SweepConfig, cells: list[Cell], store: ResultStore, echo=print) -> dict:
    """Run every pending, runnable cell. Returns counts {done_before, ran, failed, skipped}."""
    counts = {"done_before": 0, "ran": 0, "failed": 0, "skipped": 0}
    pending: dict[tuple[str, str, int], list[Cell]] = defaultdict(list)
    queued: set[str] = set()  # pairs sharing a checkpoint share its cells: each key runs once
    for cell in cells:
        if cell.skip_reason:
            counts["skipped"] += 1
        elif cell.error:  # the plan found the checkpoint or the pair bad: recorded, never loaded
            counts["failed"] += 1
            failed = {"status": "error", "stage": "plan", "error": cell.error}
            store.write_error(cell.key, _base_record(cell, config) | failed)
        elif cell.key in queued:
            continue  # another pair with this checkpoint runs the cell
        elif store.is_done(cell.key):
            counts["done_before"] += 1
        else:
            queued.add(cell.key)
            pending[(cell.pair, cell.kind, cell.replicate)].append(cell)
    for error in sorted({c.error for c in cells if c.error}):
        echo(f"FAILED before any load, its cells recorded as errors: {error}")
    total = sum(len(v) for v in pending.values())
    if not total:
        return counts
    index = 0
    for (pair_name, kind, _), todo in pending.items():
        t0 = time.perf_counter()
        try:
            loaded = load_checkpoint(todo[0].checkpoint, dtype=config.dtype, device=config.device)
        except Exception as exc:  # a bad checkpoint fails its own cells; the other pairs run
            failed = {"status": "error", "stage": "load", "error": f"{type(exc).__name__}: {exc}"}
            for cell in todo:
                store.write_error(cell.key, _base_record(cell, config) | failed)
            counts["failed"], index = counts["failed"] + len(todo), index + len(todo)
            echo(f"{todo[0].describe()} ...: FAILED to load, {len(todo)} cells recorded as errors: {exc}")
            continue
        load_s = time.perf_counter() - t0
        echo(f"loaded {pair_name}/{kind} from {loaded.source} in {load_s:.1f}s ({loaded.info['params']:,} params)")
        by_spec: dict = defaultdict(list)
        for cell in todo:
            by_spec[cell.quant].append(cell)
        for spec, spec_cells in by_spec.items():
            _reset_peak(config.device)
            model, report, quant_s, copy_s = loaded.model, None, 0.0, 0.0
            if not spec.is_baseline:
                try:
                    t0 = time.perf_counter()
                    model = copy.deepcopy(loaded.model)
                    copy_s = time.perf_counter() - t0
                    torch.manual_seed(config.seed)
                    ctx = QuantContext(tokenizer=loaded.tokenizer, device=config.device, seed=config.seed)
                    t0 = time.perf_counter()
                    report = quantize(model, spec, ctx)
                    checks.check_quant_report(report)
                    quant_s = time.perf_counter() - t0
                except Exception as exc:  # one bad spec never stops the sweep
                    for cell in spec_cells:
                        index += 1
                        counts["failed"] += 1
                        record = _base_record(cell, config) | {
                            "status": "error",
                            "stage": "quantize",
                            "error": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc(),
                        }
                        store.write_error(cell.key, record)
                        echo(f"[{index}/{total}] {cell.describe()}: FAILED to quantize: {exc}")
                    model = None
                    gc.collect()
                    continue
            for cell in spec_cells:
                index += 1
                record = _base_record(cell, config)
                record["quant_report"] = None if report is None else report.to_dict()
                try:
                    torch.manual_seed(config.seed)
                    t0 = time.perf_counter()
                    target = EvalTarget(
                        model, loaded.tokenizer, loaded.kind, config.device, config.seed, cache_dir=str(store.root)
                    )
                    output = run_task(target, cell.task)
                    metrics = output.metrics
                    checks.check_metrics(metrics)
                    eval_s = time.perf_counter() - t0
                except Exception as exc:
                    counts["failed"] += 1
                    record |= {
                        "status": "error",
                        "stage": "evaluate",
                        "error": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(),
                    }
                    store.write_error(cell.key, record)
                    echo(f"[{index}/{total}] {cell.describe()}: FAILED to evaluate: {exc}")
                    continue
                record |= {
                    "status": "ok",
                    "metrics": [asdict(m) for m in metrics],
                    "timing": {
                        "load_s": load_s,
                        "load_shared_by_cells": len(todo),
                        "copy_s": copy_s,
                        "quantize_s": quant_s,
                        "evaluate_s": eval_s,
                    },
                    "memory": _peak_memory(config.device),
                    "kind_source": loaded.kind_source,
                }
                if output.items is not None:
                    store.write_items(cell.key, output.items)
                record["has_items"] = output.items is not None
                store.write(cell.key, record)
                counts["ran"] += 1
                shown = ", ".join(f"{m.metric}={m.value:.4g}" for m in metrics[:3])
                echo(f"[{index}/{total}] {cell.describe()}: {shown} (quantize {quant_s:.1f}s, eval {eval_s:.1f}s)")
            del model
            gc.collect()
        del loaded
        gc.collect()
    return counts
