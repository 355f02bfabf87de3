"""Where the units of a sweep run: `sweep --executor local|process|ray`.

The unit is one checkpoint x quant spec with all its tasks (runner.Unit); the runner's
`run_units` computes units wherever they run, so loading, quantizing and storing stay in one
place. `local` runs them all in this process (each checkpoint loaded once for all its specs).
`process` sends the units in turn to a long-lived child process (start_method: forked from a
forkserver on CPU, spawned on CUDA), so a crash of any kind (segfault, abort, the OOM killer)
fails only the unit it was running: its cells without a record get an error record naming the
signal or exit code, and a fresh child takes the next unit. `ray` runs one such worker per GPU
(one per CPU otherwise) as a Ray actor, on the cluster at `--ray-address` or a local one; a unit
whose actor died is re-run on a new one (RAY_MAX_RETRIES), then recorded as an error like a
crashed child. Workers keep what `local` keeps between units (the current checkpoints, the built
task requests), so the start of a process, paid once per worker, is the executors' overhead.

With `process` and `ray` the driver claims a unit's cells (claims.py) when it dispatches the
unit and releases them once the unit is back, so its heartbeat covers cells computed elsewhere.
Ray workers write their records straight into the results folder: on a cluster it must be
on a filesystem every node mounts at the same path.

Ray actors carry their own runtime env (`ray_runtime_env`), so a cluster started elsewhere, or
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
from softpick_bench.sweep.runner import (Checkpoints, Unit, _base_record, add_counts, claim_cells, new_counts, plan_units,
                                         run_units)
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


# ---- process: a long-lived child that runs units in turn -------------------------------------


def _worker(config, out: str, tasks, lines, backends: str | None, path: list[str]) -> None:
    """Child process body: run the units sent on `tasks` in turn (None: stop), streaming each
    unit's lines and then its counts. Like `local`, it keeps the current (pair, replicate)'s
    checkpoints loaded between units, and the task requests it built (requests.prepare).

    A forkserver keeps the environment of its start (maybe an earlier sweep's): the driver's
    extra backends and import path are set here."""
    if backends is not None:
        os.environ[BACKENDS_ENV] = backends
    sys.path[:] = path + [p for p in sys.path if p not in path]
    store, checkpoints = ResultStore(out), Checkpoints()

    def echo(text):
        lines.put(("line", text))

    while (unit := tasks.get()) is not None:
        lines.put(("counts", run_units(config, [unit], store, echo=echo, checkpoints=checkpoints)))


class _Worker:
    """The driver's handle on one worker process."""

    def __init__(self, ctx, config, out: str):
        self.tasks, self.lines = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(target=_worker, args=(config, out, self.tasks, self.lines,
                                                      os.environ.get(BACKENDS_ENV), list(sys.path)), daemon=True)
        self.proc.start()

    def run(self, unit: Unit, line) -> tuple[dict | None, int | None]:
        """Send `unit`, pass its lines to `line`; (its counts, None), or (None, exit code) if the
        process died first."""
        self.tasks.put(unit)
        while True:
            try:
                kind, payload = self.lines.get(timeout=0.2)
            except queue_mod.Empty:
                if self.proc.is_alive():
                    continue
                try:  # it exited: whatever it sent last is already queued
                    kind, payload = self.lines.get(timeout=1.0)
                except queue_mod.Empty:
                    self.proc.join()
                    return None, self.proc.exitcode
            if kind == "line":
                line(payload)
            else:
                return payload, None

    def stop(self) -> None:
        if self.proc.is_alive():
            self.tasks.put(None)
            self.proc.join(timeout=30)
        self.kill()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()


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

    CPU: forkserver. Workers fork from a clean server that imported the runner once (torch,
    lm-eval: seconds each), never from this process (its threads): fast starts, fresh state.
    CUDA: spawn, a fresh interpreter per worker that pays those imports itself. On an H200,
    forkserver children all failed with "Cannot re-initialize CUDA in forked subprocess". Torch
    raises that in a child whose parent had set up CUDA; the server's only work was the preloaded
    import, so some import under the runner does (not found: no module-level code of ours calls
    torch.cuda)."""
    return "spawn" if device.startswith("cuda") else "forkserver"


class _ProcessRunner:
    """Units in turn on one worker process, started at the first unit and kept while units succeed.
    A worker that died (its unit's cells get crash records) or whose unit recorded a failure is
    replaced by a fresh one for the next unit: a failure may have left the process unusable (a CUDA
    fault poisons its context for good), and no later unit should inherit that."""

    def __init__(self, config, store):
        self.config, self.out = config, str(store.root)
        method = start_method(config.device)
        self.ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            self.ctx.set_forkserver_preload(["softpick_bench.sweep.executors"])
        self.worker: _Worker | None = None

    def start(self, dispatch) -> None:
        self.dispatch = dispatch

    def _start_worker(self) -> _Worker:
        return _Worker(self.ctx, self.config, self.out)

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def run(self, units: list[Unit]) -> None:
        for unit in units:
            unit = self.dispatch.claim(unit)
            if unit is None:
                continue
            if self.worker is None:
                self.worker = self._start_worker()
            since = time.time() - 1  # mtime resolution
            try:
                counts, exitcode = self.worker.run(unit, self.dispatch.line)
            except BaseException:
                self.worker.kill()
                self.worker = None
                raise
            error = None
            if counts is None:
                error = describe_exit(exitcode if exitcode is not None else -signal.SIGKILL)
                self.worker = None
            elif counts["failed"]:
                self.stop()
            self.dispatch.finish(unit, since, counts, error)


# ---- ray: one long-lived actor per GPU (or CPU) ------------------------------------------------


class _RayUnitWorker:
    """A Ray actor that runs units in turn, keeping checkpoints and requests like `_worker`. An
    actor, not a task per unit: Ray gives each GPU task a fresh worker process (max_calls=1, so
    that a reused process never runs on another GPU than the one its CUDA context holds), which
    would pay the imports and the task requests again for every unit."""

    def __init__(self):
        self.checkpoints = Checkpoints()

    def run(self, config, unit: Unit, out: str):
        lines: list[str] = []
        counts = run_units(config, [unit], ResultStore(out), echo=lines.append, checkpoints=self.checkpoints)
        return counts, lines


def start_local_ray(ray, cpus: int | None) -> None:
    """A new local Ray instance for this process: `cpus` CPUs (None: Ray's count, which heeds cgroup
    limits). address="local": with no address, ray.init would join a cluster named by RAY_ADDRESS
    or the latest `ray start` on this machine (someone else's) instead."""
    ray.init(address="local", num_cpus=cpus, include_dashboard=False)


def ray_runtime_env() -> dict:
    """The runtime env of the sweep's Ray actors (merged by Ray into the job's own, these keys winning).

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
    """One actor per slot (GPU on CUDA, CPU otherwise), each fed one unit at a time. An actor that
    died (its process crashed, its node was lost) is replaced and its unit re-run up to
    RAY_MAX_RETRIES times, then recorded like a crashed child; an actor whose unit recorded a
    failure is replaced, as `process` replaces its worker."""

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
        self.actor_class = ray.remote(max_restarts=0, max_task_retries=0, runtime_env=ray_runtime_env(),
                                      **options)(_RayUnitWorker)

    def stop(self) -> None:
        if self.started:
            self.ray.shutdown()

    def new_actor(self):
        return self.actor_class.remote()

    def run(self, units: list[Unit]) -> None:
        ray, out = self.ray, str(self.store.root)
        todo = [(unit, 0, None) for unit in units]  # (unit, attempts so far, since: None until claimed)
        idle, running = [], {}
        while todo or running:
            while todo and len(running) < self.slots:
                unit, attempt, since = todo.pop(0)
                if since is None:  # a first attempt: claim it; a retry holds its claims already
                    unit, since = self.dispatch.claim(unit), time.time() - 1
                    if unit is None:
                        continue
                actor = idle.pop() if idle else self.new_actor()
                running[actor.run.remote(self.config, unit, out)] = (unit, attempt, since, actor)
            if not running:
                continue
            done, _ = ray.wait(list(running), num_returns=1)
            unit, attempt, since, actor = running.pop(done[0])
            try:
                counts, lines = ray.get(done[0])
            except ray.exceptions.RayActorError as exc:  # its process or node died: a new actor, a retry
                if attempt < RAY_MAX_RETRIES:
                    todo.insert(0, (unit, attempt + 1, since))
                    continue
                self.dispatch.finish(unit, since, None, f"Ray worker died {attempt + 1} times: {_ray_error(exc)}")
                continue
            except Exception as exc:  # the unit raised outside the runner's own error handling
                ray.kill(actor)
                self.dispatch.finish(unit, since, None, f"Ray task failed: {_ray_error(exc)}")
                continue
            for text in lines:
                self.dispatch.line(text)
            if counts["failed"]:
                ray.kill(actor)
            else:
                idle.append(actor)
            self.dispatch.finish(unit, since, counts, None)


def _ray_error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:500]}"
