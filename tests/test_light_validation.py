"""Config errors that need no model (YAML, keys, seed, dtype, names, device, pairs, missing files) are
reported before torch, transformers, lm-eval, bitsandbytes or hqq are imported: in a fresh interpreter,
`softpick-bench sweep BAD` exits 2 with its one-line error and none of those modules is loaded."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "lm_eval", "bitsandbytes", "hqq")
PAIR = "pairs: [{name: p, softmax: ck, softpick: ck}]\ntasks: [{name: wikitext2}]\n"
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

CHILD = """
import json, sys
from softpick_bench.cli import main
codes = [main(["sweep", path]) for path in sys.argv[1:]]
print(json.dumps({"codes": codes, "loaded": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def test_structural_errors_print_before_the_heavy_imports(tmp_path):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "config.json").write_text("{}")
    paths = [str(tmp_path / "missing.yaml")]
    for name, (text, _) in BAD.items():
        (tmp_path / name).write_text(text)
        paths.append(str(tmp_path / name))
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", CHILD, *paths], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    errors = done.stderr.strip().splitlines()
    assert result["codes"] == [2] * len(paths) and len(errors) == len(paths), done.stderr
    assert "config file not found" in errors[0]
    for line, (name, (_, expected)) in zip(errors[1:], BAD.items()):
        assert line.startswith(f"error: {tmp_path / name}: ") and expected in line.lower(), line
    assert result["loaded"] == []
