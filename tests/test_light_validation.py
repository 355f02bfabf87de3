"""Config errors (YAML, keys, seed, dtype, names, device, pairs, missing files, and the tasks and quant
sections, checked against eval/declared.py and quant/declared.py) are reported before torch,
transformers, lm-eval, bitsandbytes or hqq are imported: in a fresh interpreter, `softpick-bench sweep
BAD` exits 2 with its one-line error and none of those modules is loaded; nor does validating a good
config load them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "lm_eval", "bitsandbytes", "hqq")
PAIRS = "pairs: [{name: p, softmax: ck, softpick: ck}]\n"
PAIR = PAIRS + "tasks: [{name: wikitext2}]\n"
BAD = {  # file name -> (text, expected part of the error)
    "yaml.yaml": ("seed: [1\n", "yaml"),
    "key.yaml": ("bogus: 1\n" + PAIR, "bogus: unknown key"),
    "nopairs.yaml": ("tasks: [{name: wikitext2}]\n", "pairs: required key is missing"),
    "seed.yaml": ("seed: -1\n" + PAIR, "seed: must be an integer"),
    "dtype.yaml": ("dtype: float8\n" + PAIR, "dtype: unknown dtype"),
    "name.yaml": ("name: a/b\n" + PAIR, "name: must be 1-64 characters"),
    "device.yaml": ("device: tpu\n" + PAIR, "device: unknown device"),
    "checkpoint.yaml": (PAIR.replace("softpick: ck", "softpick: ./nowhere"), "pairs[0].softpick: checkpoint"),
}

TASKS = {  # tasks: entry -> expected part of the error
    "{name: mmlu}": "tasks[0]: unknown task 'mmlu'; valid: analysis,",
    "{name: wikitext2, stride: 5}": "tasks[0]: task 'wikitext2' has no option(s) ['stride']",
    "{name: wikitext2, seq_len: x}": "tasks[0]: task 'wikitext2' option 'seq_len' must be <class 'int'>, got 'x'",
    "{name: wikitext2, seq_len: 1}": "tasks[0].seq_len: task 'wikitext2': must be an integer >= 2",
    "{name: analysis, n_samples: 0}": "tasks[0]: task 'analysis' option 'n_samples' must be >= 1",
    "{name: analysis, source: no/such.txt}": "tasks[0].source: file ",
    "{name: arc_easy, source: bogus}": "tasks[0].source: task 'arc_easy': must be one of ['local', 'hub']",
    "{name: piqa, num_fewshot: 5}": "tasks[0].num_fewshot: task 'piqa': 5 few-shot examples need the training",
}
QUANT = {  # quant: entry -> expected part of the error
    "{method: awq, bits: 4}": "quant[0].method: unknown method 'awq'; valid: none, bnb, fp8, gptq, hqq,",
    "{method: rtn, bits: 9}": "quant[0].bits: bits must be one of [2, 3, 4, 5, 6, 7, 8], got 9",
    "{method: hqq, bits: 0}": "quant[0].bits: bits must be one of [1, 2, 3, 4, 5, 6, 7, 8], got 0",
    "{method: gptq}": "quant[0].bits: method 'gptq' needs bits",
    "{method: rtn, bits: 4, options: {damp: 0.1}}": "quant[0].options.damp: method 'rtn' has no such option",
    "{method: gptq, bits: 4, options: {dampp: 0.1}}": "quant[0].options.dampp: method 'gptq' has no such option; "
                                                      "valid: ['act_order', 'block_size', 'calibration', 'damp',",
    "{method: gptq, bits: 4, options: {damp: 2}}": "quant[0].options.damp: must be a number in (0, 1), got 2",
    "{method: gptq, bits: 4, options: {calibration: none.txt}}": "quant[0].options.calibration: file ",
    "{method: bnb, bits: 4, options: {quant_type: int4}}": "quant[0].options.quant_type: must be one of ['nf4',",
    "{method: hqq, bits: 4, options: {axis: 2}}": "quant[0].options.axis: must be 0 or 1, got 2",
    "{method: rtn, bits: 4, act_bits: 8, act_granularity: per_row}": "quant[0].act_granularity: unknown granularity",
    "{method: none, kv_granularity: per_head}": "quant[0].kv_granularity: set without kv_bits",
    "{method: rtn, bits: 4, kv_bits: 4, kv_granularity: per_row}": "quant[0].kv_granularity: unknown granularity",
    "{method: rtn, bits: 4, group_size: 0}": "quant[0].group_size: must be a positive integer",
}
GOOD = PAIRS + """\
tasks: [{name: wikitext2, seq_len: 64}, {name: analysis, n_samples: 2}, {name: arc_easy, limit: 3}, {name: sciq}]
quant:
  - {method: [rtn, gptq, hqq, bnb, fp8, mxfp4, nvfp4], bits: [4, 8]}
  - {method: gptq, bits: 3, group_size: 32, options: {damp: 0.1, calibration: gutenberg, nsamples: 4}}
  - {method: bnb, bits: 4, options: {quant_type: fp4, blocksize: 128, double_quant: true}}
  - {method: rtn, bits: 4, act_bits: 8, act_granularity: per_tensor, kv_bits: 4, kv_granularity: per_head}
"""

CHILD = """
import json, sys
from softpick_bench.cli import main
codes = [main(["sweep", path]) for path in sys.argv[1:]]
print(json.dumps({"codes": codes, "loaded": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)
VALIDATE = """
import json, sys
from softpick_bench.config import load_config
config = load_config(sys.argv[1])
print(json.dumps({"specs": len(config.quant), "tasks": len(config.tasks),
                  "loaded": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def _checkpoint(tmp_path) -> None:
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "config.json").write_text("{}")


def _child(tmp_path, script: str, *args: str, env: dict | None = None) -> tuple[dict, list[str]]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **(env or {})}
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stderr.strip().splitlines()


def _sweep_errors(tmp_path, files: dict[str, str]) -> tuple[dict, list[str]]:
    """`sweep` each file in one fresh interpreter: its exit codes, the heavy modules loaded, stderr lines."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result, errors = _child(tmp_path, CHILD, *(str(tmp_path / name) for name in files))
    assert result["codes"] == [2] * len(files) and len(errors) == len(files), errors
    return result, errors


def test_structural_errors_print_before_the_heavy_imports(tmp_path):
    _checkpoint(tmp_path)
    paths = [str(tmp_path / "missing.yaml")]
    for name, (text, _) in BAD.items():
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    result, errors = _child(tmp_path, CHILD, *paths)
    assert result["codes"] == [2] * len(paths) and len(errors) == len(paths), errors
    assert "config file not found" in errors[0]
    for line, (name, (_, expected)) in zip(errors[1:], BAD.items()):
        assert line.startswith(f"error: {tmp_path / name}: ") and expected in line.lower(), line
    assert result["loaded"] == []


@pytest.mark.parametrize("section", ["tasks", "quant"])
def test_task_and_quant_errors_print_before_the_heavy_imports(tmp_path, section):
    _checkpoint(tmp_path)
    cases = TASKS if section == "tasks" else QUANT
    head = PAIRS if section == "tasks" else PAIR  # a quant error needs a valid task list beside it
    files = {f"{section}{i}.yaml": f"{head}{section}: [{entry}]\n" for i, entry in enumerate(cases)}
    result, errors = _sweep_errors(tmp_path, files)
    for line, name, expected in zip(errors, files, cases.values()):
        assert line.startswith(f"error: {tmp_path / name}: {expected}"), line
    assert result["loaded"] == []


def test_a_valid_config_is_validated_without_the_heavy_imports(tmp_path):
    _checkpoint(tmp_path)
    (tmp_path / "good.yaml").write_text(GOOD)
    result, _ = _child(tmp_path, VALIDATE, str(tmp_path / "good.yaml"))
    assert result == {"specs": 1 + 14 + 3, "tasks": 4, "loaded": []}


def test_a_plugin_backend_is_declared_when_it_registers(tmp_path):
    """SOFTPICK_BENCH_BACKENDS modules are imported by validation: their methods, bits and options validate."""
    _checkpoint(tmp_path)
    (tmp_path / "plugin.yaml").write_text(PAIR + "quant: [{method: abort_test, bits: 4}]\n")
    (tmp_path / "option.yaml").write_text(PAIR + "quant: [{method: abort_test, bits: 4, options: {x: 1}}]\n")
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'tests' / 'plugins'}", "SOFTPICK_BENCH_BACKENDS": "abort_backend"}
    result, _ = _child(tmp_path, VALIDATE, str(tmp_path / "plugin.yaml"), env=env)
    assert result["specs"] == 2
    result, errors = _child(tmp_path, CHILD, str(tmp_path / "option.yaml"), env=env)
    assert result["codes"] == [2]
    assert errors[-1].endswith("quant[0].options.x: method 'abort_test' has no such option; valid: none"), errors
    result, errors = _child(tmp_path, CHILD, str(tmp_path / "plugin.yaml"))  # without the variable: unknown
    assert result["codes"] == [2] and "unknown method 'abort_test'" in errors[-1], errors
