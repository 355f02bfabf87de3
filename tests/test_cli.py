"""The command line: short output (headline and paths), clear errors, --plan-only writes nothing,
`list` shows every option, the bitsandbytes warning is held back; and the pytest config's filters."""

import ast
import logging
import warnings
from pathlib import Path

import pytest

from softpick_bench import cli

ROOT = Path(__file__).resolve().parents[1]


def test_report_on_missing_or_empty_folder_is_one_line_exit_2(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no sweep results here" in err[0]
    (tmp_path / "cells").mkdir()
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "no finished cells" in capsys.readouterr().err


def test_report_prints_the_headline_and_paths_not_the_report(tmp_path, capsys):
    from test_report import make_run

    make_run(tmp_path)
    assert cli.main(["report", str(tmp_path), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "Headline" in out and "softpick degrades less at 2 bits" in out
    for name in ("report.md", "report.html", "results.csv"):
        assert str(tmp_path / name) in out
    assert "| quant |" not in out and "Proof of quantization" not in out
    assert len(out.splitlines()) < 15


def test_plan_only_writes_nothing_and_big_plans_print_compactly(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["sweep", str(ROOT / "configs/smoke.yaml"), "--out", str(out), "--plan-only"]) == 0
    assert not out.exists()
    text = capsys.readouterr().out
    assert text.startswith("plan: 28 cells (28 to run, 0 done before, 0 skipped)")
    assert "more to run" in text and len(text.splitlines()) <= 12


def test_list_shows_every_option_and_the_modifiers(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("rtn ", "symmetric: true | false", "group_size", "option damp", "option quant_type",
                 "act_bits", "act_granularity per_token | per_tensor", "kv_bits", "kv_granularity per_token | per_head",
                 "probs_bits [4, 8]", "option max_windows", "option limit"):
        assert word in out, word


def test_bitsandbytes_warning_is_held_until_a_bnb_cell_runs(caplog):
    logger = logging.getLogger(cli.BNB_LOGGER)
    cli.HELD.held.clear()
    logger.addFilter(cli.HELD)  # as main() does before any command
    with caplog.at_level(logging.WARNING):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community")
        assert caplog.records == []
        cli.HELD.replay()  # what `sweep` does when the plan runs a bnb cell
        assert [r.getMessage() for r in caplog.records] == ["Failed to load CPU gemm_4bit_forward from kernels-community"]
    assert cli.HELD not in logger.filters


def test_progress_counts_finished_cells():
    progress = cli._Progress(3)
    for line in ("loaded p/softmax from x", "[1/3] a: ppl=1", "[2/3] b: FAILED to evaluate: x", "[3/3] c: ppl=2"):
        progress(line)
    assert progress.bar.n == 3
    progress.close()


def test_gpu_tests_carry_the_gpu_marker():
    for path in (ROOT / "tests/gpu").glob("test_*.py"):
        tree = ast.parse(path.read_text())
        marks = [ast.unparse(n.value) for n in tree.body if isinstance(n, ast.Assign)
                 and any(getattr(t, "id", None) == "pytestmark" for t in n.targets)]
        assert marks and "pytest.mark.gpu" in marks[0], path


def test_triton_interpreter_deprecation_is_filtered_and_others_show():
    with warnings.catch_warnings(record=True) as caught:  # keeps the filters pytest set from pyproject
        for message, module in (
            ("Conversion of an array with ndim > 0 to a scalar is deprecated, and will error in future.",
             "triton.runtime.interpreter"),
            ("Conversion of an array with ndim > 0 to a scalar is deprecated, and will error in future.", "mymod"),
            ("something else is deprecated", "triton.runtime.interpreter"),
        ):
            warnings.warn_explicit(message, DeprecationWarning, "x.py", 1, module=module)
    assert [(str(w.message)[:14]) for w in caught] == ["Conversion of ", "something else"]
