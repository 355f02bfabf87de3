"""Where the units of a sweep run: `sweep --executor local|process|ray`.

The unit is one checkpoint x quant spec with all its tasks (runner.Unit); the runner's
`run_units` computes units wherever they run, so loading, quantizing and storing stay in one
place. `local` runs them all in this process (each checkpoint loaded once for all its specs).
`process` sends the units in turn to a long-lived child process (workers.py: forked from a
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

Ray actors carry their own runtime env (workers.ray_runtime_env), so a cluster started elsewhere, or
before the driver set its environment, runs them like this process: the package from the tree
this process imported it from, the driver's PYTHONPATH and extra backends, and worker niceness
0. Ray starts its workers at nice 15 by default; on a machine that other jobs keep busy, the
sweep's workers then get a few percent of a core and a sweep of seconds takes many minutes.
"""

from __future__ import annotations

import re
import signal
import time

from softpick_bench.errors import ConfigError
from softpick_bench.sweep.runner import Unit, _base_record, add_counts, claim_cells, new_counts, plan_units, run_units
from softpick_bench.sweep.store import ResultStore
from softpick_bench.sweep.workers import RayActors, Worker, describe_exit

EXECUTORS = ("local", "process", "ray")
RAY_MAX_RETRIES = 2  # re-runs of a unit whose worker died (node lost, OOM kill) before it is an error
_INDEX = re.compile(r"^\[\d+/\d+\]")  # a unit's own "[i/n]" prefix, renumbered for the whole sweep


def run_sweep(config, cells, store: ResultStore, echo, claims, executor: str = "local",
              ray_address: str | None = None, ray_cpus: int | None = None, worker: Worker | None = None,
              ray_actors: RayActors | None = None) -> dict:
    """Run a plan's pending cells on `executor`; returns the runner's counts. `worker` (process),
    `ray_actors` (ray): started early (the sweep command starts them before planning); the
    runner stops them."""
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r}: valid: {', '.join(EXECUTORS)}")
    units, counts = plan_units(config, cells, store, echo)
    if executor == "local":
        return add_counts(counts, run_units(config, units, store, echo, claims))
    if executor == "process":
        return add_counts(counts, _Dispatch(config, store, echo, claims).run(units, _ProcessRunner(config, store, worker)))
    return add_counts(counts, _Dispatch(config, store, echo, claims).run(units, _RayRunner(config, store, ray_address, ray_cpus,
                                                                                         ray_actors)))


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


# ---- process: a long-lived child that runs units in turn (workers.py) -------------------------


class _ProcessRunner:
    """Units in turn on one worker process (workers.Worker), kept while units succeed: the sweep
    command's early one if given, else one started at the first unit. A worker that died (its
    unit's cells get crash records) or whose unit recorded a failure is replaced by a fresh one
    for the next unit: a failure may have left the process unusable (a CUDA fault poisons its
    context for good), and no later unit should inherit that."""

    def __init__(self, config, store, worker: Worker | None = None):
        self.config, self.out = config, str(store.root)
        self.worker = worker

    def start(self, dispatch) -> None:
        self.dispatch = dispatch

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
                self.worker = Worker(self.config.device, self.out)
            since = time.time() - 1  # mtime resolution
            try:
                counts, exitcode = self.worker.run(self.config, unit, self.dispatch.line)
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


# ---- ray: one long-lived actor per GPU (or CPU), workers.RayActors ------------------------------


class _RayRunner:
    """One actor per slot (workers.RayActors: the sweep command's, started before planning, or its
    own), each fed one unit at a time. An actor that died (its process crashed, its node was lost)
    is replaced and its unit re-run up to RAY_MAX_RETRIES times, then recorded like a crashed
    child; an actor whose unit recorded a failure is replaced, as `process` replaces its worker."""

    def __init__(self, config, store, address, cpus, actors: RayActors | None = None):
        self.config, self.store = config, store
        self.address, self.cpus = address, cpus
        self.actors = actors

    def start(self, dispatch) -> None:
        self.dispatch = dispatch
        if self.actors is None:
            self.actors = RayActors(self.config.device, self.address, self.cpus)

    def stop(self) -> None:
        self.actors.shutdown()

    def run(self, units: list[Unit]) -> None:
        actors, out = self.actors, str(self.store.root)
        ray = actors.ray
        todo = [(unit, 0, None) for unit in units]  # (unit, attempts so far, since: None until claimed)
        running = {}
        while todo or running:
            while todo and len(running) < actors.slots:
                unit, attempt, since = todo.pop(0)
                if since is None:  # a first attempt: claim it; a retry holds its claims already
                    unit, since = self.dispatch.claim(unit), time.time() - 1
                    if unit is None:
                        continue
                actor = actors.take()
                running[actor.run.remote(self.config, unit, out)] = (unit, attempt, since, actor)
            if not running:
                continue
            done, _ = ray.wait(list(running), num_returns=1)
            unit, attempt, since, actor = running.pop(done[0])
            try:
                counts, lines = ray.get(done[0])
            except ray.exceptions.RayActorError as exc:  # its process or node died: a new actor, a retry
                actors.discard(actor)
                if attempt < RAY_MAX_RETRIES:
                    todo.insert(0, (unit, attempt + 1, since))
                    continue
                self.dispatch.finish(unit, since, None, f"Ray worker died {attempt + 1} times: {_ray_error(exc)}")
                continue
            except Exception as exc:  # the unit raised outside the runner's own error handling
                actors.discard(actor)
                self.dispatch.finish(unit, since, None, f"Ray task failed: {_ray_error(exc)}")
                continue
            for text in lines:
                self.dispatch.line(text)
            (actors.discard if counts["failed"] else actors.give_back)(actor)
            self.dispatch.finish(unit, since, counts, None)


def _ray_error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:500]}"
