"""A table of bad inputs, each with its expected outcome (issue 13).

Outcomes: refused before any load (ConfigError naming the file, the key and the valid
values); a checkpoint fault found in the plan (the pair's cells carry an error naming the
file and the tensor, the other pairs are planned as usual); a refused load; a non-finite
number turned into a failed cell; a damaged results folder (record set aside, reported,
recomputed); a one-line StoreError. Never a traceback, never an `ok` record of a wrong number.
"""

import argparse
import errno
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

from softpick_bench.cli import main
from softpick_bench.config import MAX_PLAN_CELLS, load_config
from softpick_bench.errors import CheckpointError, ConfigError, StoreError
from softpick_bench.eval.tasks import Metric
from softpick_bench.models import fla
from softpick_bench.models.checkpoint import load_checkpoint, save_checkpoint
from softpick_bench.models.tiny import build_model, tiny_llama_config
from softpick_bench.quant.spec import QuantReport
from softpick_bench.sweep import checks
from softpick_bench.sweep.plan import build_plan, plan_manifest
from softpick_bench.sweep.store import STALE_TMP_S, ResultStore

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "softpick_bench/assets/tokenizer"
TINY = dict(vocab_size=8192, hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, max_positions=128)
WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A tiny valid pair (same seed, same tokenizer), written in the project's format."""
    root = tmp_path_factory.mktemp("pair")
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    for kind in ("softmax", "softpick"):
        save_checkpoint(build_model(tiny_llama_config(**TINY), kind, seed=0), tok, root / kind, kind)
    return root


def _copy(good, tmp_path, kind="softpick") -> Path:
    dst = tmp_path / f"bad-{kind}"
    shutil.copytree(good / kind, dst)
    return dst


def _edit_weights(folder: Path, fn) -> None:
    state = load_file(str(folder / WEIGHTS))
    fn(state)
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})


def _write_config(tmp_path, pairs, quant=(), tasks=None, name="t", **top) -> Path:
    cfg = {"name": name, "pairs": pairs, "quant": list(quant),
           "tasks": tasks or [{"name": "wikitext2", "seq_len": 16, "batch_size": 2, "max_windows": 1}], **top}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _pair(good, name="p", softmax=None, softpick=None) -> dict:
    return {"name": name, "softmax": str(softmax or good / "softmax"), "softpick": str(softpick or good / "softpick")}


# ---------------------------------------------------------------------------------------
# 1. configs refused before any load: (label, change to a good config, key, hint)

def _cfg(good, tmp_path, **changes):
    base = {"name": "t", "seed": 0, "pairs": [_pair(good)], "quant": [{"method": "rtn", "bits": 4}],
            "tasks": [{"name": "wikitext2", "seq_len": 16, "max_windows": 1}]}
    for key, value in changes.items():
        base[key] = value
    return base


def _task(**options):
    return [{"name": "wikitext2", "seq_len": 16, "max_windows": 1, **options}]


def _harness(**options):
    return [{"name": "arc_easy", **options}]


def _analysis(**options):
    return [{"name": "analysis", "n_samples": 2, "seq_len": 16, **options}]


CONFIG_CASES = [
    ("seq_len 0", dict(tasks=_task(seq_len=0)), "tasks[0].seq_len", ">= 2"),
    ("seq_len 1", dict(tasks=_task(seq_len=1)), "tasks[0].seq_len", ">= 2"),
    ("batch_size -1", dict(tasks=_task(batch_size=-1)), "tasks[0].batch_size", ">= 1"),
    ("max_windows 0", dict(tasks=_task(max_windows=0)), "tasks[0].max_windows", ">= 1"),
    ("max_windows -5", dict(tasks=_task(max_windows=-5)), "tasks[0].max_windows", ">= 1"),
    ("analysis n_samples 0", dict(tasks=_analysis(n_samples=0)), "tasks[0]", ">= 1"),
    ("analysis seq_len 1", dict(tasks=_analysis(seq_len=1)), "tasks[0]", ">= 2"),
    ("analysis seed negative", dict(tasks=_analysis(seed=-1)), "tasks[0]", "0..4294967295"),
    ("analysis missing source", dict(tasks=_analysis(source="no/such.txt")), "tasks[0].source", "not found"),
    ("seed too large", dict(seed=99999999999999999999999), "seed", "0..4294967295"),
    ("seed negative", dict(seed=-3), "seed", "0..4294967295"),
    ("seed bool", dict(seed=True), "seed", "integer"),
    ("harness source bogus", dict(tasks=_harness(source="bogus")), "tasks[0].source", "'local', 'hub'"),
    ("few-shot on local data", dict(tasks=_harness(num_fewshot=5)), "tasks[0].num_fewshot", "source: hub"),
    ("harness limit -1", dict(tasks=_harness(limit=-1)), "tasks[0].limit", ">= 1"),
    ("harness limit 0", dict(tasks=_harness(limit=0)), "tasks[0].limit", ">= 1"),
    ("harness batch_size 0", dict(tasks=_harness(batch_size=0)), "tasks[0].batch_size", ">= 1"),
    ("harness num_fewshot -1", dict(tasks=_harness(num_fewshot=-1, source="hub")), "tasks[0].num_fewshot", ">= 0"),
    ("bits empty list", dict(quant=[{"method": "rtn", "bits": []}]), "quant[0].bits", "empty list"),
    ("group_size empty list", dict(quant=[{"method": "rtn", "bits": 4, "group_size": []}]), "quant[0].group_size",
     "empty list"),
    ("rtn with damp", dict(quant=[{"method": "rtn", "bits": 4, "options": {"damp": 0.1}}]), "quant[0].options.damp",
     "valid: none"),
    ("gptq damp -1", dict(quant=[{"method": "gptq", "bits": 4, "options": {"damp": -1}}]), "quant[0].options.damp",
     "(0, 1)"),
    ("gptq damp 0", dict(quant=[{"method": "gptq", "bits": 4, "options": {"damp": 0}}]), "quant[0].options.damp",
     "(0, 1)"),
    ("gptq nsamples 0", dict(quant=[{"method": "gptq", "bits": 4, "options": {"nsamples": 0}}]),
     "quant[0].options.nsamples", ">= 1"),
    ("gptq unknown option", dict(quant=[{"method": "gptq", "bits": 4, "options": {"dampp": 0.1}}]),
     "quant[0].options.dampp", "damp"),
    ("gptq calibration missing", dict(quant=[{"method": "gptq", "bits": 4, "options": {"calibration": "x.txt"}}]),
     "quant[0].options.calibration", "not found"),
    ("hqq axis 2", dict(quant=[{"method": "hqq", "bits": 4, "symmetric": False, "options": {"axis": 2}}]),
     "quant[0].options.axis", "0 or 1"),
    ("bnb quant_type", dict(quant=[{"method": "bnb", "bits": 4, "options": {"quant_type": "int3"}}]),
     "quant[0].options.quant_type", "nf4"),
    ("bnb threshold negative", dict(quant=[{"method": "bnb", "bits": 8, "options": {"threshold": -1.0}}]),
     "quant[0].options.threshold", ">= 0"),
    ("name escapes runs/", dict(name="../../escaped_out"), "name", "letters, digits"),
    ("name with slash", dict(name="a/b"), "name", "letters, digits"),
    ("name with NUL", dict(name="a\x00b"), "name", "letters, digits"),
    ("name empty", dict(name=""), "name", "letters, digits"),
    ("pair name with space", dict(pairs=[{"name": "my pair", "softmax": "x", "softpick": "y"}]), "pairs[0].name",
     "letters, digits"),
    ("replicate lists differ in length", "replicates-unequal", "pairs[0]", "same number"),
    ("replicate list empty", "replicates-empty", "pairs[0].softmax", "empty list"),
    ("checkpoint path is a file", "checkpoint-file", "pairs[0].softpick", "is a file"),
    ("dtype not a string", dict(dtype=["float32"]), "dtype", "valid: float32"),
]


def _special(case, good, tmp_path):
    if case == "replicates-unequal":
        return _cfg(good, tmp_path, pairs=[{"name": "p", "softmax": [str(good / "softmax")] * 2,
                                             "softpick": [str(good / "softpick")]}])
    if case == "replicates-empty":
        return _cfg(good, tmp_path, pairs=[{"name": "p", "softmax": [], "softpick": []}])
    if case == "checkpoint-file":
        return _cfg(good, tmp_path, pairs=[_pair(good, softpick=good / "softpick" / WEIGHTS)])
    raise AssertionError(case)


@pytest.mark.parametrize("label,change,key,hint", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_refused_before_any_load(good, tmp_path, label, change, key, hint):
    cfg = _special(change, good, tmp_path) if isinstance(change, str) else _cfg(good, tmp_path, **change)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and key in message and hint in message, message
    assert "\n" not in message and len(message) < 600, message


RAW_YAML_CASES = [
    ("duplicate key", b"name: a\nname: b\npairs: []\ntasks: []\n", "duplicate key 'name'"),
    ("duplicate nested key", b"pairs:\n  - {name: p, name: q}\ntasks: []\n", "duplicate key 'name'"),
    ("not UTF-8", b"name: caf\xe9\npairs: []\n", "not UTF-8"),
    ("NUL byte in the file", b"name: a\x00b\npairs: []\n", "NUL byte"),
    ("alias bomb", b"a: &a [x, x, x, x, x, x, x, x, x, x]\n"
     + b"".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n".encode()
                for p, c in zip("abcdefgh", "bcdefghi"))
     + b"seed: *i\npairs: []\ntasks: []\n", "expands to"),
    ("broken YAML", b"pairs: [\n", "not valid YAML"),
    ("top level a list", b"- a\n- b\n", "top level must be a mapping"),
]


@pytest.mark.parametrize("label,data,hint", RAW_YAML_CASES, ids=[c[0] for c in RAW_YAML_CASES])
def test_raw_yaml_refused_in_one_line(tmp_path, label, data, hint):
    path = tmp_path / "raw.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert hint in message and str(path) in message, message
    assert "\n" not in message and len(message) < 600, message


def test_yaml_merge_keys_still_work(good, tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(
        "pairs:\n"
        f"  - {{name: p, softmax: {good / 'softmax'}, softpick: {good / 'softpick'}}}\n"
        "tasks:\n  - &t {name: wikitext2, seq_len: 16, max_windows: 1}\n  - {<<: *t, seq_len: 32}\n"
    )
    cfg = load_config(path)
    assert [t.option("seq_len") for t in cfg.tasks] == [16, 32]


def test_large_plan_needs_the_flag(good, tmp_path):
    grid = [{"method": "rtn", "bits": [2, 3, 4, 5, 6, 7, 8], "group_size": [None, 16, 32],
             "symmetric": [True, False], "kv_bits": [None, 2, 3, 4, 5, 6, 7, 8], "act_bits": [None, 4, 6, 8],
             "probs_bits": [None, 4, 8]}]
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(_cfg(good, tmp_path, quant=grid)))
    with pytest.raises(ConfigError, match=f"more than {MAX_PLAN_CELLS}; pass --allow-large-plan"):
        load_config(path)
    config = load_config(path, allow_large_plan=True)
    assert config.cell_count() == 2 * (1 + 7 * 3 * 2 * 8 * 4 * 3)
    cells = build_plan(config)  # one inspection per checkpoint, not per cell
    assert len(cells) == config.cell_count() and len({c.key for c in cells}) == len(cells)


def test_hard_cap_even_with_the_flag(good, tmp_path):
    grid = [{"method": "rtn", "bits": [2, 3, 4, 5, 6, 7, 8], "group_size": list(range(1, 200)),
             "kv_bits": [None, 2, 3, 4, 5, 6, 7, 8], "act_bits": [None, 4, 6, 8], "symmetric": [True, False],
             "probs_bits": [None, 4, 8]}]
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(_cfg(good, tmp_path, quant=grid)))
    with pytest.raises(ConfigError, match="split the sweep"):
        load_config(path, allow_large_plan=True)


def test_seq_len_beyond_the_models_positions_refused_in_the_plan(good, tmp_path):
    path = _write_config(tmp_path, [_pair(good)], tasks=[{"name": "wikitext2", "seq_len": 4096}])
    with pytest.raises(ConfigError, match=r"tasks\[0\].seq_len: 4096 tokens.*max_position_embeddings 128; valid: 2..128"):
        build_plan(load_config(path))


# ---------------------------------------------------------------------------------------
# 2. checkpoint faults found in the plan, without loading weights: (label, corrupt(folder), text)

def _drop(name):
    return lambda f: _edit_weights(f, lambda s: s.pop(name))


def _reshape(name):
    return lambda f: _edit_weights(f, lambda s: s.__setitem__(name, s[name][:-1].clone()))


def _extra(f):
    _edit_weights(f, lambda s: s.__setitem__("model.layers.9.mlp.up_proj.weight", torch.zeros(2, 2)))


def _truncate(f):
    data = (f / WEIGHTS).read_bytes()
    (f / WEIGHTS).write_bytes(data[: len(data) - 1000])


def _config_edit(**changes):
    def edit(f):
        cfg = json.loads((f / "config.json").read_text())
        cfg.update(changes)
        (f / "config.json").write_text(json.dumps(cfg))
    return edit


def _fla_pickle(f):
    """The paper's format with a pickle that holds more than tensors (the weights-only loader refuses it)."""
    state = load_file(str(f / WEIGHTS))
    (f / WEIGHTS).unlink()
    cfg = json.loads((f / "config.json").read_text())
    fla_cfg = {"model_type": "transformer", "attn_impl": "parallel_softpick_attn", "vocab_size": cfg["vocab_size"],
               "hidden_size": cfg["hidden_size"], "num_heads": cfg["num_attention_heads"],
               "num_kv_heads": cfg["num_key_value_heads"], "num_hidden_layers": cfg["num_hidden_layers"],
               "intermediate_size": cfg["intermediate_size"], "max_position_embeddings": 128, "norm_eps": 1e-6}
    (f / "config.json").write_text(json.dumps(fla_cfg))
    torch.save({fla.llama_to_fla_key(k): v for k, v in state.items()} | {"optimizer": argparse.Namespace(step=1)},
               f / "pytorch_model.bin")


CHECKPOINT_CASES = [
    ("missing tensor", _drop("model.layers.0.mlp.down_proj.weight"), "'model.layers.0.mlp.down_proj.weight' is missing"),
    ("missing lm_head", _drop("lm_head.weight"), "'lm_head.weight' is missing"),
    ("mis-shaped tensor", _reshape("model.layers.0.self_attn.q_proj.weight"),
     "'model.layers.0.self_attn.q_proj.weight' has shape [31, 32], but the config"),
    ("unexpected tensor", _extra, "unexpected tensor 'model.layers.9.mlp.up_proj.weight'"),
    ("truncated safetensors", _truncate, "not a readable safetensors file"),
    ("empty safetensors", lambda f: (f / WEIGHTS).write_bytes(b""), "header too small"),
    ("no weight files", lambda f: (f / WEIGHTS).unlink(), "no *.safetensors or *.bin weight files"),
    ("config wider than the weights", _config_edit(intermediate_size=96), "but the config"),
    ("config.json not JSON", lambda f: (f / "config.json").write_text("{"), "config.json"),
    ("listed as softpick, config says softmax", _config_edit(attention_kind="softmax"),
     "is listed as softpick but its config says softmax"),
    ("unknown attention kind", _config_edit(attention_kind="linear"), "attention_kind='linear' unknown"),
    ("pair differs in architecture", _config_edit(rms_norm_eps=1e-5), "architecture differs first at config key"),
    ("fla pickle refused by the weights-only loader", _fla_pickle, "weights-only loader refuses this file"),
]


@pytest.mark.parametrize("label,corrupt,text", CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_bad_checkpoint_fails_its_pair_in_the_plan(good, tmp_path, label, corrupt, text):
    bad = _copy(good, tmp_path)
    corrupt(bad)
    path = _write_config(tmp_path, [_pair(good, "bad", softpick=bad), _pair(good, "good")])
    cells = build_plan(load_config(path))
    bad_cells = [c for c in cells if c.pair == "bad"]
    assert bad_cells and all(c.error for c in bad_cells)  # both sides: a half pair compares nothing
    message = bad_cells[0].error
    assert text in message, message
    assert str(bad) in message, message  # names the checkpoint (file or folder)
    assert all(c.error is None for c in cells if c.pair == "good")
    good_keys = {c.key for c in cells if c.pair == "good"}
    assert not good_keys & {c.key for c in bad_cells}  # error records never touch a sharing pair's cells


def test_every_weight_fault_names_the_file(good, tmp_path):
    bad = _copy(good, tmp_path)
    _drop("model.norm.weight")(bad)
    with pytest.raises(CheckpointError, match=f"{bad / WEIGHTS}: tensor 'model.norm.weight' is missing"):
        load_checkpoint(str(bad))  # the loader refuses too: never a random initialisation


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_weight_refused_at_load(good, tmp_path, value):
    bad = _copy(good, tmp_path)
    _edit_weights(bad, lambda s: s["model.layers.0.mlp.up_proj.weight"].view(-1).__setitem__(3, value))
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor 'model.layers.0.mlp.up_proj.weight' has 1 "
                                              r"non-finite value"):
        load_checkpoint(str(bad))


# ---------------------------------------------------------------------------------------
# 3. numeric faults: a non-finite number is a failed cell with the reason

NUMERIC_CASES = [
    ("NaN perplexity", [Metric("ppl_gptq", float("nan"))], "ppl_gptq is NaN"),
    ("inf perplexity", [Metric("ppl_gptq", float("inf"))], "ppl_gptq is +inf"),
    ("NaN stderr", [Metric("acc", 0.5, float("nan"))], "acc: stderr is NaN"),
    ("NaN inside details", [Metric("kurtosis", 3.0, details={"per_layer": [1.0, float("-inf")]})],
     "kurtosis: details.per_layer[1] is -inf"),
]


@pytest.mark.parametrize("label,metrics,reason", NUMERIC_CASES, ids=[c[0] for c in NUMERIC_CASES])
def test_non_finite_metric_is_a_failure(label, metrics, reason):
    with pytest.raises(checks.NonFiniteError, match=reason.replace("[", r"\[").replace("+", r"\+")):
        checks.check_metrics(metrics)


def test_finite_metrics_and_reports_pass():
    checks.check_metrics([Metric("ppl_gptq", 12.5, 0.1, details={"x": [1.0, 2]})])
    checks.check_quant_report(QuantReport("rtn", 2, 2, 10, 0.01, 4.5))


def test_non_finite_weight_error_is_a_failure():
    with pytest.raises(checks.NonFiniteError, match="mean_rel_weight_error = NaN"):
        checks.check_quant_report(QuantReport("rtn", 2, 2, 10, float("nan"), 4.5))


# ---------------------------------------------------------------------------------------
# 4. results folders

def _record(key, **extra):
    return {"key": key, "status": "ok", "pair": "p", "metrics": [{"metric": "ppl", "value": 3.5}], **extra}


def _store_with(tmp_path, key="k1"):
    store = ResultStore(tmp_path / "out")
    store.write(key, _record(key))
    return store, store.cells / f"{key}.json"


STORE_CASES = [
    ("truncated record", lambda p: p.write_text(p.read_text()[:40]), "not valid JSON"),
    ("empty record file", lambda p: p.write_text(""), "not valid JSON"),
    ("record replaced by {}", lambda p: p.write_text("{}"), "empty or not a record"),
    ("edited value", lambda p: p.write_text(p.read_text().replace("3.5", "2.5")), "checksum does not match"),
    ("checksum removed", lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items()
                                                              if k != "checksum"})), "has no checksum"),
    ("bare NaN in the file", lambda p: p.write_text(p.read_text().replace("3.5", "NaN")), "not valid JSON"),
    ("record of another key", lambda p: p.write_text((p.parent / "k2.json").read_text()), "holds the record of key"),
    ("not UTF-8", lambda p: p.write_bytes(b"\xff\xfe"), "unreadable"),
]


@pytest.mark.parametrize("label,damage,reason", STORE_CASES, ids=[c[0] for c in STORE_CASES])
def test_damaged_record_is_set_aside_and_recomputed(tmp_path, label, damage, reason):
    store, path = _store_with(tmp_path)
    store.write("k2", _record("k2"))
    damage(path)
    fresh = ResultStore(store.root)
    assert not fresh.is_done("k1")  # the sweep will recompute it
    assert [r["key"] for r in fresh.records()] == ["k2"]
    assert (path.parent / "k1.json.corrupt").is_file() and not path.exists()
    assert any(reason in p and "k1.json" in p for p in fresh.problems), fresh.problems


def test_stale_temporary_files_ignored_then_cleaned(tmp_path):
    store, _ = _store_with(tmp_path)
    stale, young = store.cells / ".tmp-abc.json", store.cells / ".tmp-def.json"
    stale.write_text('{"trunc')
    young.write_text('{"trunc')
    old = stale.stat().st_mtime - STALE_TMP_S - 10
    os.utime(stale, (old, old))
    fresh = ResultStore(store.root)
    assert not stale.exists() and young.exists()  # a young one may be another writer's
    assert [r["key"] for r in fresh.records()] == ["k1"]  # neither is read as a record


def test_non_finite_never_written_as_ok_and_error_records_stay_strict(tmp_path):
    store = ResultStore(tmp_path / "out")
    with pytest.raises(StoreError, match="non-finite"):
        store.write("k", _record("k", metrics=[{"metric": "ppl", "value": float("nan")}]))
    store.write_error("k", {"key": "k", "status": "error", "quant_report": {"mean_rel_weight_error": float("nan")}})
    text = (store.cells / "k.error.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c))["quant_report"]["mean_rel_weight_error"] == "NaN"


def test_out_folder_that_is_a_file(tmp_path):
    path = tmp_path / "out"
    path.write_text("not a folder")
    with pytest.raises(StoreError, match="the results folder is a file"):
        ResultStore(path)


def test_full_disk_is_one_line(tmp_path, monkeypatch):
    store = ResultStore(tmp_path / "out")

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StoreError, match="k.json: cannot write: No space left on device"):
        store.write("k", _record("k"))
    assert not list(store.cells.glob(".tmp-*"))  # nothing half-written is left


def test_damaged_items_file_is_set_aside(tmp_path):
    store = ResultStore(tmp_path / "out")
    store.write_items("k", {"format": 1, "task": "t", "metrics": {}})
    path = store.cells / "k.items.json.gz"
    path.write_bytes(path.read_bytes()[:-6])
    assert store.read_items("k") is None and (store.cells / "k.items.json.gz.corrupt").is_file()


def test_unchanged_plan_is_not_rewritten(tmp_path, monkeypatch):
    store = ResultStore(tmp_path / "out")
    store.write_meta("plan.json", {"name": "t", "cells": []})
    monkeypatch.setattr(store, "_write_bytes", lambda *a: pytest.fail("rewrote an unchanged plan"))
    store.write_meta("plan.json", {"name": "t", "cells": []})  # a read-only folder still reports


# ---------------------------------------------------------------------------------------
# 5. end to end: a bad pair is reported and skipped, shared checkpoints and replicates are attributed

def test_bad_pair_skipped_while_the_others_run(good, tmp_path, capsys):
    bad = _copy(good, tmp_path)
    _drop("model.layers.0.mlp.down_proj.weight")(bad)
    pairs = [_pair(good, "bad", softpick=bad), _pair(good, "good"), _pair(good, "twin"),
             {"name": "seeds", "softmax": [str(good / "softmax")] * 2, "softpick": [str(good / "softpick")] * 2}]
    path = _write_config(tmp_path, pairs, name="e2e")
    out = tmp_path / "run"
    assert main(["sweep", str(path), "--out", str(out)]) == 1  # failures are reported, not raised
    text = capsys.readouterr().out
    assert "FAILED before any load" in text and "model.layers.0.mlp.down_proj.weight' is missing" in text
    assert "2 cells ran" in text and "2 failed" in text  # good/twin/seeds share the same two cells

    config = load_config(path)
    cells = build_plan(config)
    assert {c.describe() for c in cells if c.pair == "seeds"} == {
        "seeds#0/softmax none wikitext2", "seeds#1/softmax none wikitext2",
        "seeds#0/softpick none wikitext2", "seeds#1/softpick none wikitext2"}
    store = ResultStore(out)
    plan = plan_manifest(config, cells)
    records = store.for_plan(plan)
    assert sorted((r["pair"], r["replicate"], r["kind"]) for r in records) == sorted(
        [(p, 0, k) for p in ("good", "twin") for k in ("softmax", "softpick")]
        + [("seeds", r, k) for r in (0, 1) for k in ("softmax", "softpick")])
    assert all(r["status"] == "ok" for r in records)
    assert {r["checkpoint_given"] for r in records} == {str(good / "softmax"), str(good / "softpick")}
    errors = store.for_plan(plan, errors=True)
    assert {r["pair"] for r in errors} == {"bad"} and all(r["stage"] == "plan" for r in errors)
    assert store.foreign_keys(plan) == []
    other = ResultStore(out)
    other.write("someone-else", _record("someone-else"))
    assert other.foreign_keys(plan) == ["someone-else"]


def test_file_inputs_are_keyed_by_content(good, tmp_path):
    text = tmp_path / "sample.txt"
    text.write_text("one text\n")
    tasks = [{"name": "analysis", "n_samples": 1, "seq_len": 8, "source": "sample.txt"}]  # relative to the config
    path = _write_config(tmp_path, [_pair(good)], tasks=tasks)
    first = build_plan(load_config(path))[0].key
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(text, moved / "sample.txt")
    shutil.copy(path, moved / "t.yaml")
    assert build_plan(load_config(moved / "t.yaml"))[0].key == first  # same content, another path: same cell
    text.write_text("an edited text\n")
    assert build_plan(load_config(path))[0].key != first  # edited: a new cell, never a stale result
