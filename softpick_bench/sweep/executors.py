"""Where the units of a sweep run: `sweep --executor local|process|ray`.

The unit is one checkpoint x quant spec with all its tasks (runner.Unit); the runner's
`run_units` computes units wherever they run, so loading, quantizing and storing stay in one
place. `local` runs them all in this process (each checkpoint loaded once for all its specs).
`process` runs each unit in a fresh child process (start_method: forked from a forkserver on CPU,
spawned on CUDA), so a crash of any kind (segfault,
abort, the OOM killer) fails only that unit: its cells without a record get an error record
naming the signal or exit code. `ray` submits each unit as a Ray task (one GPU each on CUDA,
one CPU otherwise), on the cluster at `--ray-address` or a local one; a task whose worker dies
is retried (RAY_MAX_RETRIES), then recorded as an error like a crashed child.

With `process` and `ray` the driver claims a unit's cells (claims.py) when it dispatches the
unit and releases them once the unit is back, so its heartbeat covers cells computed elsewhere.
Ray workers write their records straight into the results folder: on a cluster it must be
on a filesystem every node mounts at the same path.

Ray tasks carry their own runtime env (`ray_runtime_env`), so a cluster started elsewhere, or
before the driver set its environment, runs them like this process: the package from the tree
this process imported it from, the driver's PYTHONPATH and extra backends, and worker niceness
0. Ray starts its workers at nice 15 by default; on a machine that other jobs keep busy, the
sweep's workers then get a few percent of a core and a sweep of seconds takes many minutes.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_mod
import re
import signal
import sys
import time
from pathlib import Path

from softpick_bench.errors import ConfigError
from softpick_bench.quant import BACKENDS_ENV
from softpick_bench.sweep.runner import Unit, _base_record, add_counts, claim_cells, new_counts, plan_units, run_units
from softpick_bench.sweep.store import ResultStore

EXECUTORS = ("local", "process", "ray")
RAY_MAX_RETRIES = 2  # re-runs of a unit whose worker died (node lost, OOM kill) before it is an error
_INDEX = re.compile(r"^\[\d+/\d+\]")  # a unit's own "[i/n]" prefix, renumbered for the whole sweep


def run_sweep(config, cells, store: ResultStore, echo, claims, executor: str = "local",
              ray_address: str | None = None, ray_cpus: int | None = None) -> dict:
    """Run a plan's pending cells on `executor`; returns the runner's counts."""
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r}: valid: {', '.join(EXECUTORS)}")
    units, counts = plan_units(config, cells, store, echo)
    if executor == "local":
        return add_counts(counts, run_units(config, units, store, echo, claims))
    if executor == "process":
        return add_counts(counts, _Dispatch(config, store, echo, claims).run(units, _ProcessRunner(config, store)))
    return add_counts(counts, _Dispatch(config, store, echo, claims).run(units, _RayRunner(config, store, ray_address, ray_cpus)))


def crash_records(config, store: ResultStore, cells, since: float, error: str) -> list:
    """Error records for the cells a dead worker left without a record of this run; those cells."""
    failed = []
    for cell in cells:
        if store.is_done(cell.key):
            continue
        path = store.cells / f"{cell.key}.error.json"
        if path.is_file() and path.stat().st_mtime >= since and store.record(cell.key, error=True):
            continue  # the worker recorded this cell's own failure before it died
        store.write_error(cell.key, _base_record(cell, config) | {"status": "error", "stage": "worker", "error": error})
        failed.append(cell)
    return failed


class _Dispatch:
    """The driver's loop: claim a unit's cells, hand the unit to a runner, collect, release."""

    def __init__(self, config, store, echo, claims):
        self.config, self.store, self.echo, self.claims = config, store, echo, claims
        self.counts = new_counts()
        self.index = 0
        self.total = 0

    def line(self, text: str) -> None:
        if _INDEX.match(text):
            self.index += 1
            text = _INDEX.sub(f"[{self.index}/{self.total}]", text)
        self.echo(text)

    def finish(self, unit: Unit, since: float, counts: dict | None, error: str | None) -> None:
        if counts is not None:
            add_counts(self.counts, counts)
        if error is not None:
            failed = crash_records(self.config, self.store, unit.cells, since, error)
            self.counts["failed"] += len(failed)
            for cell in failed:
                self.line(f"[0/0] {cell.describe()}: FAILED, {error}")
        for key in unit.keys:
            self.claims.release(key)

    def claim(self, unit: Unit) -> Unit | None:
        held, index = claim_cells(unit.cells, self.store, self.claims, self.counts, self.echo, self.index, self.total)
        self.index = index
        return Unit(unit.group, unit.spec, held) if held else None

    def run(self, units: list[Unit], runner) -> dict:
        self.total = sum(len(u.cells) for u in units)
        runner.start(self)
        try:
            runner.run(units)
        finally:
            runner.stop()
        return self.counts


# ---- process: one child per unit -----------------------------------------------------------


def _child(config, unit: Unit, out: str, lines, backends: str | None, path: list[str]) -> None:
    """Child process body: run one unit, stream its lines, send its counts last.

    The forkserver kept the environment of its start (maybe an earlier sweep's): the driver's
    extra backends and import path are set here."""
    if backends is not None:
        os.environ[BACKENDS_ENV] = backends
    sys.path[:] = path + [p for p in sys.path if p not in path]
    counts = run_units(config, [unit], ResultStore(out), echo=lambda text: lines.put(("line", text)))
    lines.put(("counts", counts))


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker process killed by {name} (exit code {code})"
    return f"worker process exited with code {code} before recording its cells"


def start_method(device: str) -> str:
    """How `process` starts its children for a sweep on `device`.

    CPU: forkserver. Children fork from a clean server that imported the runner once (torch,
    lm-eval: seconds each), never from this process (its threads): fast starts, fresh state.
    CUDA: spawn, a fresh interpreter per unit that pays those imports itself. On an H200, forkserver
    children all failed with "Cannot re-initialize CUDA in forked subprocess". Torch raises that in
    a child whose parent had set up CUDA; the server's only work was the preloaded import, so some
    import under the runner does (not found: no module-level code of ours calls torch.cuda)."""
    return "spawn" if device.startswith("cuda") else "forkserver"


class _ProcessRunner:
    def __init__(self, config, store):
        self.config, self.store = config, store
        method = start_method(config.device)
        self.ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            self.ctx.set_forkserver_preload(["softpick_bench.sweep.executors"])

    def start(self, dispatch) -> None:
        self.dispatch = dispatch

    def stop(self) -> None:
        pass

    def run(self, units: list[Unit]) -> None:
        for unit in units:
            unit = self.dispatch.claim(unit)
            if unit is None:
                continue
            since = time.time() - 1  # mtime resolution
            lines = self.ctx.Queue()
            proc = self.ctx.Process(target=_child, args=(self.config, unit, str(self.store.root), lines,
                                                                os.environ.get(BACKENDS_ENV), list(sys.path)), daemon=True)
            proc.start()
            counts = None
            try:
                while True:
                    try:
                        kind, payload = lines.get(timeout=0.2)
                    except queue_mod.Empty:
                        if proc.is_alive():
                            continue
                        try:  # it exited: whatever it sent last is already queued
                            kind, payload = lines.get(timeout=1.0)
                        except queue_mod.Empty:
                            break
                    if kind == "line":
                        self.dispatch.line(payload)
                    else:
                        counts = payload
                proc.join()
            except BaseException:
                proc.kill()
                proc.join()
                raise
            error = None
            if counts is None or proc.exitcode != 0:
                error = describe_exit(proc.exitcode if proc.exitcode is not None else -signal.SIGKILL)
            self.dispatch.finish(unit, since, counts, error)


# ---- ray: one task per unit ------------------------------------------------------------------


def _ray_unit(config, unit: Unit, out: str):
    lines: list[str] = []
    counts = run_units(config, [unit], ResultStore(out), echo=lines.append)
    return counts, lines


def start_local_ray(ray, cpus: int | None) -> None:
    """A new local Ray instance for this process: `cpus` CPUs (None: Ray's count, which heeds cgroup
    limits). address="local": with no address, ray.init would join a cluster named by RAY_ADDRESS
    or the latest `ray start` on this machine (someone else's) instead."""
    ray.init(address="local", num_cpus=cpus, include_dashboard=False)


def ray_runtime_env() -> dict:
    """The runtime env of the sweep's Ray tasks (merged by Ray into the job's own, these keys winning).

    PYTHONPATH: the source tree this process imported softpick_bench from (a checkout, not an
    installed copy), then the driver's PYTHONPATH; on a cluster the tree must be at the same path
    on every node (or the package installed there). RAY_worker_niceness=0: Ray renices workers to
    15 by default (see the module docstring)."""
    import softpick_bench

    root = Path(softpick_bench.__file__).resolve().parents[1]
    path = [str(root)] if (root / "pyproject.toml").is_file() else []
    path += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in path]
    env = {"RAY_worker_niceness": "0"}
    if path:
        env["PYTHONPATH"] = os.pathsep.join(path)
    if os.environ.get(BACKENDS_ENV):
        env[BACKENDS_ENV] = os.environ[BACKENDS_ENV]
    return {"env_vars": env}


class _RayRunner:
    def __init__(self, config, store, address, cpus):
        try:
            import ray
        except ImportError:
            raise ConfigError('--executor ray needs Ray: pip install -e ".[ray]"') from None
        self.ray, self.config, self.store = ray, config, store
        self.address, self.cpus = address, cpus
        self.started = False

    def start(self, dispatch) -> None:
        self.dispatch = dispatch
        ray = self.ray
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address)
            else:
                start_local_ray(ray, self.cpus)
            self.started = True
        cuda = self.config.device.startswith("cuda")
        resources = ray.cluster_resources()
        if cuda and resources.get("GPU", 0) < 1:
            raise ConfigError(f"device {self.config.device!r} but the Ray cluster has no GPU: {resources}")
        self.slots = max(1, int(resources.get("GPU" if cuda else "CPU", 1)))
        options = {"num_gpus": 1} if cuda else {"num_cpus": 1}
        self.task = ray.remote(max_retries=RAY_MAX_RETRIES, retry_exceptions=False, runtime_env=ray_runtime_env(),
                               **options)(_ray_unit)

    def stop(self) -> None:
        if self.started:
            self.ray.shutdown()

    def run(self, units: list[Unit]) -> None:
        ray, todo, running = self.ray, list(units), {}
        out = str(self.store.root)
        while todo or running:
            while todo and len(running) < self.slots:
                unit = self.dispatch.claim(todo.pop(0))
                if unit is not None:
                    running[self.task.remote(self.config, unit, out)] = (unit, time.time() - 1)
            if not running:
                continue
            done, _ = ray.wait(list(running), num_returns=1)
            unit, since = running.pop(done[0])
            try:
                counts, lines = ray.get(done[0])
            except Exception as exc:  # the worker died RAY_MAX_RETRIES + 1 times, or the node went
                self.dispatch.finish(unit, since, None, f"Ray task failed: {type(exc).__name__}: {str(exc)[:500]}")
                continue
            for text in lines:
                self.dispatch.line(text)
            self.dispatch.finish(unit, since, counts, None)

