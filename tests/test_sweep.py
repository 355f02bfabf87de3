"""End to end on the shipped pair: plan, run, store, re-run, report; failures stay contained."""

from pathlib import Path

import pandas as pd
import pytest
import yaml

from softpick_bench.cli import main
from softpick_bench.report.compare import per_replicate

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path, quant, name="t"):
    cfg = {
        "name": name,
        "pairs": [
            {
                "name": "micro",
                "softmax": str(ROOT / "checkpoints/micro/softmax"),
                "softpick": str(ROOT / "checkpoints/micro/softpick"),
            }
        ],
        "quant": quant,
        "tasks": [{"name": "wikitext2", "seq_len": 64, "batch_size": 4, "max_windows": 2}],
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_sweep_then_rerun_recomputes_nothing(tmp_path, capsys):
    cfg = _config(tmp_path, [{"method": "rtn", "bits": [2, 8], "group_size": 32}])
    out = tmp_path / "run"
    assert main(["sweep", str(cfg), "--out", str(out)]) == 0
    first = capsys.readouterr().out
    assert "6 cells ran, 0 already done" in first
    assert "| rtn-w2-g32 |" in (out / "report.md").read_text() and "report.md" in first  # the sweep prints the headline and paths
    assert main(["sweep", str(cfg), "--out", str(out)]) == 0
    assert "0 cells ran, 6 already done (not recomputed)" in capsys.readouterr().out
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 6 and set(df.kind) == {"softmax", "softpick"}
    assert set(df.metric) == {"ppl_gptq"}
    assert (df[df.quant != "none"].rel_weight_error > 0).all()
    assert (out / "report.md").is_file()


def test_impossible_cell_listed_as_skipped_and_failure_contained(tmp_path, capsys):
    # group size 48 divides no width of the shipped model: skipped in the plan, before any work
    cfg = _config(tmp_path, [{"method": "rtn", "bits": 4, "group_size": [48, 32]}], name="skip")
    out = tmp_path / "run"
    assert main(["sweep", str(cfg), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SKIPPED: group size 48 does not divide" in text
    assert "4 cells ran" in text and "2 skipped" in text
    assert "### Skipped cells" in (out / "report.md").read_text()


def test_degradation_is_against_each_kinds_own_baseline():
    rows = []
    for kind, base, quant in (("softmax", 10.0, 14.0), ("softpick", 12.0, 13.0)):
        for label, value in (("none", base), ("rtn-w2", quant)):
            rows.append({"pair": "p", "task": "t", "metric": "ppl", "quant": label, "kind": kind, "value": value,
                         "replicate": 0, "direction": "lower", "family": "rtn", "axis_bits": 2, "key": label + kind,
                         "has_items": False})
    deg = per_replicate(pd.DataFrame(rows), store=None).set_index("quant")
    assert deg.loc["rtn-w2", "rel_softmax"] == pytest.approx(0.4)  # (14 - 10) / 10
    assert deg.loc["rtn-w2", "rel_softpick"] == pytest.approx(1 / 12)
    assert deg.loc["rtn-w2", "diff"] == pytest.approx(1 / 12 - 0.4)


def test_bad_config_exits_with_message(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("pairs: []\ntasks: []\n")
    assert main(["sweep", str(path)]) == 2
    assert "pairs" in capsys.readouterr().err


def test_failing_cell_keeps_the_others(tmp_path, capsys):
    cfg = _config(tmp_path, [], name="fail")
    raw = yaml.safe_load(cfg.read_text())
    short = tmp_path / "short.txt"
    short.write_text("too short for two samples")
    raw["tasks"].append({"name": "analysis", "n_samples": 2, "seq_len": 64, "source": str(short)})  # fails at eval
    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "run"
    assert main(["sweep", str(cfg), "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "2 cells ran" in text and "2 failed" in text
    assert len(list((out / "cells").glob("*.error.json"))) == 2
    assert "Failed cells" in (out / "report.md").read_text()
