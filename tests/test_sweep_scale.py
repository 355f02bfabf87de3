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


def test_process_executor_matches_local_and_contains_a_crash(local_run, tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(PLUGINS))  # spawn children inherit sys.path and the environment
    monkeypatch.setenv("SOFTPICK_BENCH_BACKENDS", "abort_backend")
    cfg, expected = local_run
    raw = yaml.safe_load(cfg.read_text())
    raw["quant"].append({"method": "abort_test", "bits": 4})
    cfg = tmp_path / "crash.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["sweep", str(cfg), "--out", str(out), "--executor", "process"]) == 1
    text = capsys.readouterr().out
    assert "6 cells ran" in text and "2 failed" in text
    errors = [json.loads(p.read_text()) for p in (out / "cells").glob("*.error.json")]
    assert len(errors) == 2 and {e["quant"]["method"] for e in errors} == {"abort_test"}
    assert all(e["stage"] == "worker" and "SIGABRT" in e["error"] for e in errors)
    pd.testing.assert_frame_equal(_values(out), expected)
    assert not list((out / "claims").glob("*"))


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    ray.shutdown()


def test_ray_executor_matches_local(local_run, ray_cluster, tmp_path, capsys):
    cfg, expected = local_run
    out = tmp_path / "run"
    assert main(["sweep", str(cfg), "--out", str(out), "--executor", "ray"]) == 0
    assert "6 cells ran" in capsys.readouterr().out
    pd.testing.assert_frame_equal(_values(out), expected)
    assert not list((out / "claims").glob("*"))
