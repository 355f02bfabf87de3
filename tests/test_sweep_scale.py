"""Scale-out: cell claims (two sweeps on one folder, stale claims, kill -9 and resume) and the
executors (`--executor process|ray` give local's values; a crashing unit is only its own error)."""

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from softpick_bench.cli import main
from softpick_bench.sweep import executors, workers
from softpick_bench.sweep.claims import Claims

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "plugins"
RAN = "cells ran"


def _config(tmp_path, quant, name="scale"):
    cfg = {
        "name": name,
        "pairs": [{"name": "micro", "softmax": str(ROOT / "checkpoints/micro/softmax"),
                   "softpick": str(ROOT / "checkpoints/micro/softpick")}],
        "quant": quant,
        "tasks": [{"name": "wikitext2", "seq_len": 64, "batch_size": 4, "max_windows": 2}],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


RTN = [{"method": "rtn", "bits": [2, 4], "group_size": 32}]  # 3 specs (with the baseline) x 2 kinds = 6 cells


def _sweep_main(argv, log):
    with open(log, "w") as f:  # a separate process: its own pid, its own claims
        sys.stdout = f
        sys.exit(main(argv))


def _sweep_proc(cfg, out, log):
    """A sweep in its own process, forked from a server that imported the package once (fast starts)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["softpick_bench.cli", "softpick_bench.sweep.executors"])
    proc = ctx.Process(target=_sweep_main, args=(["sweep", str(cfg), "--out", str(out)], str(log)))
    proc.start()
    return proc


def _ran(text: str) -> int:
    line = next(line for line in text.splitlines() if RAN in line)
    return int(line.split()[0])


def _ok_records(out):
    return sorted(p for p in (out / "cells").glob("*.json") if not p.name.endswith(".error.json"))


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_two_sweeps_on_one_folder_compute_each_cell_once(tmp_path):
    cfg, out = _config(tmp_path, RTN), tmp_path / "run"
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [_sweep_proc(cfg, out, log) for log in logs]
    for p in procs:
        p.join(timeout=240)
    texts = [log.read_text() for log in logs]
    assert [p.exitcode for p in procs] == [0, 0], texts
    assert sum(_ran(t) for t in texts) == 6, texts  # a cell computed twice would make it more
    assert len(_ok_records(out)) == 6
    assert not list((out / "claims").glob("*"))  # every claim released


def test_stale_claims_are_taken_over_live_ones_are_not(tmp_path):
    claims = Claims(tmp_path, timeout_s=60)
    host = socket.gethostname()
    (claims.folder / "dead.claim").write_text(json.dumps({"host": host, "pid": _dead_pid(), "started": 0}))
    assert claims.claim("dead") and "is gone" in claims.taken_over[-1]
    old = claims.folder / "old.claim"  # another machine whose heartbeat stopped
    old.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": 0}))
    os.utime(old, (time.time() - 61, time.time() - 61))
    assert claims.claim("old") and "heartbeat" in claims.taken_over[-1]
    live = claims.folder / "live.claim"  # another machine, beating: left to it
    live.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": 0}))
    assert not claims.claim("live")
    ours = json.loads((claims.folder / "dead.claim").read_text())
    assert ours["pid"] == os.getpid() and ours["host"] == host
    other = Claims(tmp_path, timeout_s=60)  # a second sweep in this process: our claim is live
    assert not other.claim("dead")
    claims.release_all()
    assert sorted(p.name for p in claims.folder.iterdir()) == ["live.claim"]


def test_kill_9_mid_sweep_then_resume_loses_nothing(tmp_path, capsys):
    cfg, out = _config(tmp_path, [{"method": "rtn", "bits": [2, 3, 4, 8], "group_size": 32}], name="kill"), tmp_path / "run"
    proc = _sweep_proc(cfg, out, tmp_path / "killed.log")
    deadline = time.time() + 180
    while not _ok_records(out) and proc.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    log = tmp_path / "killed.log"
    assert proc.is_alive(), f"the sweep ended (exit {proc.exitcode}) before it could be killed: " + (
        log.read_text()[-2000:] if log.is_file() else "no log")
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    finished = {p.name: p.read_bytes() for p in _ok_records(out)}
    assert finished, "the driver was killed before its first cell"
    assert main(["sweep", str(cfg), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"{10 - len(finished)} cells ran, {len(finished)} already done" in text
    assert "claimed elsewhere" not in text  # the dead driver's claims did not block the resume
    assert all((out / "cells" / name).read_bytes() == body for name, body in finished.items())  # kept as is
    assert len(_ok_records(out)) == 10 and not list((out / "claims").glob("*"))


# ---- executors ---------------------------------------------------------------------------------


def _values(out) -> pd.DataFrame:
    df = pd.read_csv(out / "results.csv")
    return df.sort_values(["kind", "quant", "metric"])[["kind", "quant", "metric", "value"]].reset_index(drop=True)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    cfg = _config(tmp, RTN)
    assert main(["sweep", str(cfg), "--out", str(tmp / "run")]) == 0
    return cfg, _values(tmp / "run")


def _with_abort(cfg, tmp_path):
    """`cfg` plus a spec whose quantizer aborts its process: 2 more cells, both failing."""
    raw = yaml.safe_load(cfg.read_text())
    raw["quant"].append({"method": "abort_test", "bits": 4})
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _check_crash_contained(out, text, expected, error_has: str):
    assert "6 cells ran" in text and "2 failed" in text
    errors = [json.loads(p.read_text()) for p in (out / "cells").glob("*.error.json")]
    assert len(errors) == 2 and {e["quant"]["method"] for e in errors} == {"abort_test"}
    assert all(e["stage"] == "worker" and error_has in e["error"] for e in errors), errors
    pd.testing.assert_frame_equal(_values(out), expected)
    assert not list((out / "claims").glob("*"))


def _count_starts(monkeypatch, cls, method: str) -> list:
    """Count the calls of cls.method (a worker's or an actor's start)."""
    calls, original = [], getattr(cls, method)

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, counted)
    return calls


def test_process_executor_matches_local_and_contains_a_crash(local_run, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(PLUGINS))  # the forkserver's children get the driver's sys.path and backends
    monkeypatch.setenv("SOFTPICK_BENCH_BACKENDS", "abort_backend")
    started = _count_starts(monkeypatch, workers.Worker, "__init__")
    cfg, expected = local_run
    out = tmp_path / "run"
    assert main(["sweep", str(_with_abort(cfg, tmp_path)), "--out", str(out), "--executor", "process"]) == 1
    text = capsys.readouterr().out
    _check_crash_contained(out, text, expected, "SIGABRT")
    # units in turn on one child (started before the plan was made): 6 good units, then the first
    # abort kills it and a fresh one takes the second; the first child loaded micro/softmax once
    # for its 4 units of that checkpoint
    assert started == [1, 1], started
    assert text.count("loaded micro/softmax") == 1, text
    softmax = [json.loads(p.read_text()) for p in _ok_records(out)]
    softmax = [r for r in softmax if r["kind"] == "softmax"]
    assert {(r["quant"]["method"], r["timing"]["load_reused"]) for r in softmax} == {("none", False), ("rtn", True)}


def test_process_worker_is_replaced_after_a_failed_unit(tmp_path, monkeypatch, capsys):
    """A unit whose quantizer raises is recorded as failed by the runner, and the next unit gets a
    fresh worker (a CUDA fault would have poisoned the old one's context)."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("SOFTPICK_BENCH_BACKENDS", "abort_backend")
    started = _count_starts(monkeypatch, workers.Worker, "__init__")
    out = tmp_path / "run"
    cfg = _config(tmp_path, [{"method": "raise_test", "bits": 4}])
    assert main(["sweep", str(cfg), "--out", str(out), "--executor", "process"]) == 1
    text = capsys.readouterr().out
    assert "2 cells ran" in text and "2 failed" in text, text
    errors = [json.loads(p.read_text()) for p in (out / "cells").glob("*.error.json")]
    assert sorted(e["stage"] for e in errors) == ["quantize", "quantize"], errors
    # the baselines share the first worker; each failing unit then ends its worker's life
    assert started == [1, 1], started


def test_process_children_are_spawned_on_cuda_forked_from_a_server_on_cpu():
    from softpick_bench.sweep.workers import start_method

    assert [start_method(d) for d in ("cpu", "cuda", "cuda:1")] == ["forkserver", "spawn", "spawn"]


def test_spawned_process_children_match_local(local_run, tmp_path, monkeypatch):
    """The CUDA start method, exercised on CPU: fresh interpreters give local's values. The baseline
    alone (2 units): each spawned child pays the imports, about 13 s here."""
    asked = []
    monkeypatch.setattr(workers, "start_method", lambda device: asked.append(device) or "spawn")
    started = _count_starts(monkeypatch, workers.Worker, "__init__")
    _, expected = local_run
    out = tmp_path / "run"
    assert main(["sweep", str(_config(tmp_path, [])), "--out", str(out), "--executor", "process"]) == 0
    assert started == [1], started  # both units on one spawned child
    got = _values(out)
    baseline = expected[expected["quant"].isin(got["quant"])].reset_index(drop=True)
    assert got["quant"].nunique() == 1 and len(got) == len(baseline) == 2 * got["metric"].nunique()
    pd.testing.assert_frame_equal(got, baseline)
    assert asked == ["cpu"]  # the runner took its start method from here


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A local 2-CPU Ray instance, started as `sweep --executor ray --ray-cpus 2` starts one. Its
    workers inherit the environment of its start: ABORT_TEST_LOG is set for that start only, and the
    test sets the plugin's path and backend afterwards, so only the executor's runtime env carries them."""
    ray = pytest.importorskip("ray")
    from softpick_bench.sweep.workers import start_local_ray

    attempts = tmp_path_factory.mktemp("ray") / "abort-attempts.log"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABORT_TEST_LOG", str(attempts))
        mp.delenv("SOFTPICK_BENCH_BACKENDS", raising=False)
        start_local_ray(ray, cpus=2)
    yield attempts
    ray.shutdown()


def test_ray_executor_matches_local_and_contains_a_crash(local_run, ray_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(executors, "RAY_MAX_RETRIES", 1)  # one retry shows retrying; each costs a worker start
    monkeypatch.syspath_prepend(str(PLUGINS))  # the driver validates the plan with the backend loaded
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SOFTPICK_BENCH_BACKENDS", "abort_backend")
    actors = _count_starts(monkeypatch, workers.RayActors, "new_actor")
    cfg, expected = local_run
    out = tmp_path / "run"
    assert main(["sweep", str(_with_abort(cfg, tmp_path)), "--out", str(out), "--executor", "ray"]) == 1
    _check_crash_contained(out, capsys.readouterr().out, expected, "ActorDiedError")
    # one actor per CPU, kept across units: each of the 4 attempts that abort takes its actor down,
    # the 6 good units run on at most 2 more (a worker per unit would have been 10 starts)
    assert 4 <= len(actors) <= 6, actors
    attempts = ray_cluster.read_text().splitlines()
    assert len(attempts) == 2 * 2, attempts  # each crashing unit: its run and its retry
    assert all(line.endswith(" nice=0") for line in attempts), attempts  # not Ray's default nice 15


def test_a_worker_that_cannot_start_says_so(monkeypatch):
    """A start failure (here: the process refuses to start) is raised where the unit is sent, with
    its cause, and stopping that worker is a no-op."""
    def refuse(self):
        raise OSError("no more processes")

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
    worker = workers.Worker("cpu", "/nonexistent")
    with pytest.raises(RuntimeError, match="did not start: OSError"):
        worker.run(None, None, print)
    worker.stop()
