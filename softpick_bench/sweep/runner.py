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
from dataclasses import asdict, dataclass

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


COUNT_KEYS = ("done_before", "ran", "failed", "skipped", "claimed_elsewhere")


@dataclass
class Unit:
    """The runner's unit of work: one checkpoint (pair, kind, replicate) x one quant spec, all its tasks."""

    group: tuple[str, str, int]
    spec: object
    cells: list[Cell]

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.cells]


def new_counts() -> dict:
    return dict.fromkeys(COUNT_KEYS, 0)


def add_counts(total: dict, more: dict) -> dict:
    for k in COUNT_KEYS:
        total[k] += more.get(k, 0)
    return total


def plan_units(config: SweepConfig, cells: list[Cell], store: ResultStore, echo=print) -> tuple[list[Unit], dict]:
    """The pending units of a plan, pair-major (`pair_major`); skipped, done and plan-error cells are counted
    (plan errors written as error records here, they never reach a unit)."""
    counts = new_counts()
    pending: dict[tuple[str, str, int], dict] = defaultdict(dict)
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
            pending[(cell.pair, cell.kind, cell.replicate)].setdefault(cell.quant, []).append(cell)
    for error in sorted({c.error for c in cells if c.error}):
        echo(f"FAILED before any load, its cells recorded as errors: {error}")
    units = [Unit(group, spec, todo) for group, specs in pending.items() for spec, todo in specs.items()]
    return [u for block in pair_major(units) for u in block], counts


def run_plan(config: SweepConfig, cells: list[Cell], store: ResultStore, echo=print, claims=None) -> dict:
    """Run every pending, runnable cell in this process. Returns counts (COUNT_KEYS)."""
    units, counts = plan_units(config, cells, store, echo)
    return add_counts(counts, run_units(config, units, store, echo, claims))


def claim_cells(cells: list[Cell], store: ResultStore, claims, counts: dict, echo, index: int, total: int):
    """The cells of `cells` this process now holds; the others are counted (claimed elsewhere, or
    finished by another sweep since the plan was made). Returns (held, index)."""
    held = []
    for cell in cells:
        if claims is not None and not claims.claim(cell.key):
            index += 1
            counts["claimed_elsewhere"] += 1
            holder = claims.holder(cell.key) or {}
            echo(f"[{index}/{total}] {cell.describe()}: claimed by {holder.get('host')}:{holder.get('pid')}, left to it")
        elif store.is_done(cell.key):  # another sweep finished it after our plan was made
            index += 1
            counts["done_before"] += 1
            if claims is not None:
                claims.release(cell.key)
            echo(f"[{index}/{total}] {cell.describe()}: finished by another sweep meanwhile")
        else:
            held.append(cell)
    return held, index


def pair_major(units: list[Unit]) -> list[list[Unit]]:
    """`units` in blocks of one (pair, replicate), each block spec by spec with the kinds alternating
    (softmax, softpick, softmax, ...), so a sweep stopped half way has paired cells, not one
    kind's whole matrix and nothing of its twin."""
    blocks: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))
    for unit in units:
        pair, kind, replicate = unit.group
        blocks[(pair, replicate)][unit.spec].append(unit)
    return [[u for same_spec in by_spec.values() for u in same_spec] for by_spec in blocks.values()]


class Checkpoints:
    """The loaded checkpoints of one (pair, replicate) block, kept while its units run; a unit of
    another block drops them first, so at most one block's models are in memory. A long-lived
    worker keeps one across the units it is sent, as `run_units` does within one call."""

    def __init__(self):
        self.block: tuple | None = None
        self.loaded: dict[tuple, tuple] = {}  # group -> (model or None, load error or None, load seconds)

    def get(self, config: SweepConfig, group: tuple, cell: Cell, echo) -> tuple[tuple, bool]:
        """(model or None, load error or None, load seconds), and whether an earlier unit loaded it."""
        block = (group[0], group[2])
        if block != self.block:
            self.clear()
            self.block = block
        reused = group in self.loaded
        if not reused:
            self.loaded[group] = _load(config, group, cell, echo)
        return self.loaded[group], reused

    def clear(self) -> None:
        self.loaded.clear()
        self.block = None
        gc.collect()


def run_units(config: SweepConfig, units: list[Unit], store: ResultStore, echo=print, claims=None,
              checkpoints: Checkpoints | None = None) -> dict:
    """Run `units` here, pair-major (`pair_major`): the checkpoints of one (pair, replicate) stay
    loaded while its units run, one quantized copy at a time, every record stored before the next
    cell. With `claims`, each unit's cells are claimed just before it runs (cells held elsewhere
    are left to their holder) and released as their records are written; without, the caller
    holds them (executors claim in the driver). `checkpoints`: the caller's, kept loaded after
    the call (a worker's across its units); by default this call's own, dropped at its end."""
    counts = new_counts()
    total = sum(len(u.cells) for u in units)
    index = 0
    own = checkpoints is None
    checkpoints = Checkpoints() if own else checkpoints

    def finish(cell, record, ok):
        (store.write if ok else store.write_error)(cell.key, record)
        if claims is not None:
            claims.release(cell.key)

    try:
        for block in pair_major(units):
            for unit in block:
                spec_cells, index = claim_cells(unit.cells, store, claims, counts, echo, index, total)
                if not spec_cells:
                    continue
                try:
                    (model, load_error, load_s), reused = checkpoints.get(config, unit.group, spec_cells[0], echo)
                    if load_error is not None:
                        for cell in spec_cells:
                            index += 1
                            finish(cell, _base_record(cell, config) | {"status": "error", "stage": "load",
                                                                       "error": load_error}, ok=False)
                        counts["failed"] += len(spec_cells)
                        continue
                    index = _run_spec(config, model, unit.spec, spec_cells, store, finish, counts, echo,
                                      index, total, load_s, reused)
                finally:
                    if claims is not None:
                        for cell in spec_cells:
                            claims.release(cell.key)
    finally:
        if own:
            checkpoints.clear()
    return counts


def _load(config: SweepConfig, group: tuple, cell: Cell, echo) -> tuple:
    """(loaded checkpoint, None, seconds), or (None, error text, 0.0): a bad checkpoint fails its
    own cells and the other checkpoints run."""
    pair_name, kind, _ = group
    t0 = time.perf_counter()
    try:
        loaded = load_checkpoint(cell.checkpoint, dtype=config.dtype, device=config.device)
    except Exception as exc:
        echo(f"{cell.describe()} ...: FAILED to load, its cells recorded as errors: {exc}")
        return None, f"{type(exc).__name__}: {exc}", 0.0
    load_s = time.perf_counter() - t0
    echo(f"loaded {pair_name}/{kind} from {loaded.source} in {load_s:.1f}s ({loaded.info['params']:,} params)")
    return loaded, None, load_s


def _run_spec(config, loaded, spec, spec_cells, store, finish, counts, echo, index, total, load_s, reused) -> int:
    """Quantize one copy for `spec` and evaluate its cells; returns the advanced cell index."""
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
                finish(cell, record, ok=False)
                echo(f"[{index}/{total}] {cell.describe()}: FAILED to quantize: {exc}")
            model = None
            gc.collect()
            return index
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
            finish(cell, record, ok=False)
            echo(f"[{index}/{total}] {cell.describe()}: FAILED to evaluate: {exc}")
            continue
        record |= {
            "status": "ok",
            "metrics": [asdict(m) for m in metrics],
            "timing": {
                "load_s": load_s,
                "load_reused": reused,  # load_s was paid by an earlier unit's cells, not this one's
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
        finish(cell, record, ok=True)
        counts["ran"] += 1
        shown = ", ".join(f"{m.metric}={m.value:.4g}" for m in metrics[:3])
        echo(f"[{index}/{total}] {cell.describe()}: {shown} (quantize {quant_s:.1f}s, eval {eval_s:.1f}s)")
    del model
    gc.collect()
    return index
