"""The executors' workers: long-lived processes that run the units they are sent. `Worker` is the
`process` executor's child; `RayActors` the `ray` executor's actors, one per GPU (or CPU).

Light at import (no torch, no lm-eval), so the sweep command can start the workers as soon as
the config is read: their imports (seconds) then run while the driver plans the sweep, instead
of after it. A worker keeps what `local` keeps between units: the current (pair, replicate)'s
checkpoints (runner.Checkpoints) and the task requests it built (requests.prepare).
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_mod
import signal
import sys
import threading
from pathlib import Path

from softpick_bench.errors import ConfigError
from softpick_bench.quant.declared import BACKENDS_ENV


def start_method(device: str) -> str:
    """How `process` starts its workers for a sweep on `device`.

    CPU: forkserver. Workers fork from a clean server that imported the runner once, never from
    the driver (its threads): fresh state, and a replacement worker starts in a fraction of a
    second. CUDA: spawn, a fresh interpreter per worker that pays those imports itself. On an
    H200, forkserver children all failed with "Cannot re-initialize CUDA in forked subprocess".
    Torch raises that in a child whose parent had set up CUDA; the server's only work was the
    preloaded import, so some import under the runner does (not found: no module-level code of
    ours calls torch.cuda)."""
    return "spawn" if device.startswith("cuda") else "forkserver"


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker process killed by {name} (exit code {code})"
    return f"worker process exited with code {code} before recording its cells"


def _worker_main(out: str, tasks, lines, backends: str | None, path: list[str]) -> None:
    """Child process body: run the (config, unit) pairs sent on `tasks` in turn (None: stop),
    streaming each unit's lines and then its counts.

    A forkserver keeps the environment of its start (maybe an earlier sweep's): the driver's
    extra backends and import path are set here."""
    if backends is not None:
        os.environ[BACKENDS_ENV] = backends
    sys.path[:] = path + [p for p in sys.path if p not in path]
    from softpick_bench.sweep.runner import Checkpoints, run_units
    from softpick_bench.sweep.store import ResultStore

    store, checkpoints = ResultStore(out), Checkpoints()

    def echo(text):
        lines.put(("line", text))

    while (task := tasks.get()) is not None:
        config, unit = task
        lines.put(("counts", run_units(config, [unit], store, echo=echo, checkpoints=checkpoints)))


class Worker:
    """The driver's handle on one worker process for the results folder `out`. The process
    starts in the background (a forkserver's first start waits for its preload); `run` waits
    for it."""

    def __init__(self, device: str, out: str):
        method = start_method(device)
        ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            ctx.set_forkserver_preload(["softpick_bench.sweep.runner"])
        self.tasks, self.lines = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(target=_worker_main, args=(out, self.tasks, self.lines,
                                                           os.environ.get(BACKENDS_ENV), list(sys.path)), daemon=True)
        self.used = False
        self._start_error: BaseException | None = None
        self._starting = threading.Thread(target=self._start, daemon=True)
        self._starting.start()

    def _start(self) -> None:
        try:
            self.proc.start()
        except BaseException as exc:  # raised in the driver by `run`
            self._start_error = exc

    def _started(self) -> bool:
        self._starting.join()
        return self._start_error is None

    def run(self, config, unit, line) -> tuple[dict | None, int | None]:
        """Send `unit`, pass its lines to `line`; (its counts, None), or (None, exit code) if the
        process died first."""
        if not self._started():
            raise RuntimeError(f"the worker process did not start: {self._start_error!r}") from self._start_error
        self.used = True
        self.tasks.put((config, unit))
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
        """Let it finish and exit; one that never got a unit (a sweep with nothing to run) is killed."""
        if not self._started():
            return
        if self.used and self.proc.is_alive():
            self.tasks.put(None)
            self.proc.join(timeout=30)
        self.kill()

    def kill(self) -> None:
        if not self._started():
            return
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()


# ---- ray --------------------------------------------------------------------------------------


class RayUnitWorker:
    """The body of a Ray actor that runs units in turn, like `_worker_main`. An actor, not a Ray
    task per unit: Ray gives each GPU task a fresh worker process (max_calls=1, so that a reused
    process never runs on another GPU than the one its CUDA context holds), which would pay the
    imports and the task requests again for every unit."""

    def __init__(self):
        from softpick_bench.sweep.runner import Checkpoints  # the imports, while the driver plans

        self.checkpoints = Checkpoints()

    def run(self, config, unit, out: str):
        from softpick_bench.sweep.runner import run_units
        from softpick_bench.sweep.store import ResultStore

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
    15 by default; on a machine that other jobs keep busy, the sweep's workers then get a few
    percent of a core and a sweep of seconds takes many minutes."""
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


class RayActors:
    """The sweep's Ray actors: joins the cluster at `address` (or starts a local one with `cpus`
    CPUs) and starts one actor per slot (a GPU for a CUDA sweep, a CPU otherwise) at once, so
    their imports overlap whatever the driver does next. Actors are handed out by `take`,
    returned by `give_back`, and a `discard`ed one (it failed, or died) is replaced on demand."""

    def __init__(self, device: str, address: str | None, cpus: int | None):
        try:
            import ray
        except ImportError:
            raise ConfigError('--executor ray needs Ray: pip install -e ".[ray]"') from None
        self.ray, self.started = ray, False
        if not ray.is_initialized():
            if address:
                ray.init(address=address)
            else:
                start_local_ray(ray, cpus)
            self.started = True
        cuda = device.startswith("cuda")
        resources = ray.cluster_resources()
        if cuda and resources.get("GPU", 0) < 1:
            self.shutdown()
            raise ConfigError(f"device {device!r} but the Ray cluster has no GPU: {resources}")
        self.slots = max(1, int(resources.get("GPU" if cuda else "CPU", 1)))
        options = {"num_gpus": 1} if cuda else {"num_cpus": 1}
        self.actor_class = ray.remote(max_restarts=0, max_task_retries=0, runtime_env=ray_runtime_env(),
                                      **options)(RayUnitWorker)
        self.alive: list = []
        self.idle = [self.new_actor() for _ in range(self.slots)]

    def new_actor(self):
        actor = self.actor_class.remote()
        self.alive.append(actor)
        return actor

    def take(self):
        return self.idle.pop() if self.idle else self.new_actor()

    def give_back(self, actor) -> None:
        self.idle.append(actor)

    def discard(self, actor) -> None:
        self.ray.kill(actor)
        self.alive.remove(actor)

    def shutdown(self) -> None:
        """Kill the actors (on a cluster that outlives the sweep they would hold its GPUs), and end
        the Ray instance if this sweep started it."""
        for actor in self.alive:
            self.ray.kill(actor)
        self.alive.clear()
        if self.started:
            self.ray.shutdown()
            self.started = False
