"""Training: schedule, batches, attention backends, and a tiny end-to-end pair on CPU."""

import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from softpick_bench.kernels import reference
from softpick_bench.models.checkpoint import load_checkpoint
from softpick_bench.train.attention import _forward, choose_backend, train_attention_name
from softpick_bench.train.determinism import deterministic
from softpick_bench.train.reproduce import main as reproduce_main
from softpick_bench.train.command import main as train_main
from softpick_bench.train.config import TrainConfig
from softpick_bench.train.data import TokenShards, encode_documents, train_batch, val_batches, write_shards
from softpick_bench.train.trainer import TOKENIZER_DIR, lr_at, tokenizer_hash


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4) and lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(55, cfg) == pytest.approx(0.55e-3)  # half way through the cosine
    assert lr_at(100, cfg) == pytest.approx(1e-4)
    lrs = [lr_at(s, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_batches_are_a_function_of_seed_and_step():
    tokens = np.arange(1000, dtype=np.uint16) + 3
    a = train_batch(tokens, 5, 4, 16, seed=7)
    assert a.shape == (4, 17)
    assert torch.equal(a, train_batch(tokens, 5, 4, 16, seed=7))
    assert not torch.equal(a, train_batch(tokens, 6, 4, 16, seed=7))
    assert bool((a[:, 1:] - a[:, :-1] == 1).all())  # contiguous slices of the stream
    rows = list(val_batches(tokens, 16, 3, 10))
    assert [r.shape[0] for r in rows] == [3, 3, 3, 1] and int(rows[1][0, 0]) == 3 + 3 * 16
    assert int(rows[0][0, -1]) == int(rows[0][1, 0])  # consecutive rows share one boundary token
    assert len(list(val_batches(tokens[:33], 16, 8, 100))) == 1 and sum(r.shape[0] for r in val_batches(tokens[:33], 16, 8, 100)) == 2


def test_bos_first_rows_start_with_bos_then_the_stream():
    tokens = np.arange(1000, dtype=np.uint16) + 3
    plain, bos = train_batch(tokens, 5, 4, 16, seed=7), train_batch(tokens, 5, 4, 16, seed=7, first=0)
    assert bos.shape == plain.shape == (4, 17)
    assert bool((bos[:, 0] == 0).all()) and torch.equal(bos[:, 1:], plain[:, :-1])  # same windows, bos in front
    val = next(val_batches(tokens, 16, 2, 2, first=0))
    assert bool((val[:, 0] == 0).all()) and int(val[1, 1]) == 3 + 16 and bool((val[:, 2:] - val[:, 1:-1] == 1).all())


def test_read_documents_from_xz(tmp_path):
    import lzma

    from softpick_bench.train.data import read_documents

    path = tmp_path / "t.txt.xz"
    path.write_bytes(lzma.compress(b"first doc\n\f\nsecond doc\n"))
    assert read_documents(path) == ["first doc", "second doc"]


def test_encode_documents_joins_with_eos():
    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    ids = encode_documents(tok, ["Hello world.", "Second document."], eos_id=1, bos_id=0)
    assert ids.dtype == np.uint16 and (ids == 1).sum() == 2 and ids[-1] == 1
    assert (ids == 0).sum() == 2 and ids[0] == 0 and ids[list(ids).index(1) + 1] == 0  # bos doc eos bos doc eos
    assert encode_documents(tok, ["Hello world.", "Second document."], eos_id=1, max_tokens=3).size == 3


@pytest.mark.parametrize("kind", ["softmax", "softpick"])
def test_training_attention_matches_reference(kind):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 9, 8, generator=g) for _ in range(3))
    ref = reference.attention(q, k, v, kind=kind, causal=True, scale=0.3)
    backends = ["reference", "sdpa"] if kind == "softmax" else ["reference"]
    for backend in backends:
        torch.testing.assert_close(_forward(kind, backend, q, k, v, 0.3), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        train_attention_name("softpick", "sdpa")
    assert choose_backend([kind], "cpu")[0] == "reference"


def test_one_training_attention_path_for_both_kinds():
    assert choose_backend(["softmax", "softpick"], "cpu") == ("reference", "CPU: the reference path")
    assert choose_backend(["softmax", "softpick"], "cuda", "kernel") == ("kernel", "requested")
    with pytest.raises(ValueError, match="softmax only, not softpick"):
        choose_backend(["softmax", "softpick"], "cuda", "sdpa")
    with pytest.raises(ValueError, match="valid: auto, sdpa, kernel, reference"):
        choose_backend(["softmax"], "cuda", "flash")
    assert choose_backend(["softmax"], "cuda", "sdpa")[0] == "sdpa"


def test_deterministic_settings_are_restored():
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic("cpu") as settings:
        assert torch.are_deterministic_algorithms_enabled() and settings["torch_deterministic_algorithms"]
    assert torch.are_deterministic_algorithms_enabled() == before


def _toy_shards(folder):
    tok = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    docs = [f"Story {i}: the cat sat on the mat and looked at the {i} birds. " * 8 for i in range(40)]
    ids = encode_documents(tok, docs, eos_id=1, bos_id=0)
    meta = {"tokenizer_sha256_16": tokenizer_hash(TOKENIZER_DIR / "tokenizer.json"), "bos_id": 0, "eos_id": 1,
            "vocab_size": tok.get_vocab_size(), "train_files": ["toy"], "documents_joined_with": "bos doc eos"}
    write_shards(folder, ids[: int(ids.size * 0.8)], ids[int(ids.size * 0.8) :], meta)


@pytest.mark.parametrize("rows", ["stream", "bos_first"])
def test_train_pair_end_to_end(tmp_path, rows):
    _toy_shards(tmp_path / "shards")
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(
        f"name: toy\nrows: {rows}\nmodel: {{hidden: 32, layers: 2, heads: 2, intermediate: 64, max_positions: 64}}\n"
        "seq_len: 32\nbatch_size: 4\nsteps: 12\nlr: 1.0e-2\nwarmup_steps: 2\neval_every: 6\nval_rows: 8\n"
        "log_every: 1\nseed: 3\ntrack_analysis_samples: 2\ntrack_analysis_seq_len: 16\n"
    )
    assert train_main(["train", "--config", str(recipe), "--out", str(tmp_path / "run"),
                       "--data", str(tmp_path / "shards"), "--device", "cpu"]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps_done"] == 12 and set(summary["sides"]) == {"softmax", "softpick"}
    assert summary["config"]["rows"] == rows
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    first = {r["kind"]: r["loss"] for r in log if r.get("event") == "train" and r["step"] == 0}
    last = {r["kind"]: r["loss"] for r in log if r.get("event") == "train" and r["step"] == 11}
    for kind in ("softmax", "softpick"):
        assert last[kind] < first[kind] - 0.5  # learning happened on both sides
        assert [v for s, v in summary["sides"][kind]["val_curve"]] and summary["sides"][kind]["val_curve"][-1][0] == 12
        loaded = load_checkpoint(tmp_path / "run" / kind)
        assert loaded.kind == kind and loaded.kind_source == "config.json attention_kind"
        assert loaded.model.config.training["steps"] == 12
        assert (tmp_path / "run" / kind / "train_config.json").is_file()
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    tracked = [r for r in log if r.get("event") == "analysis"]
    assert {(r["kind"], r["step"]) for r in tracked} == {(k, s) for k in ("softmax", "softpick") for s in (6, 12)}
    assert all(0.0 <= r["sink_rate_0.3"] <= 1.0 and r["n_samples"] == 2 for r in tracked)
    # identical init: attention kind adds no parameters, so step-0 weights match; the
    # pair's first-step losses differ only through attention
    assert first["softmax"] != first["softpick"]


def _toy_recipe(tmp_path, rows="bos_first", seed=3):
    recipe = tmp_path / f"toy-{seed}.yaml"
    recipe.write_text(
        f"name: toy\nrows: {rows}\nmodel: {{hidden: 32, layers: 2, heads: 2, intermediate: 64, max_positions: 64}}\n"
        f"seq_len: 32\nbatch_size: 4\nsteps: 6\nlr: 1.0e-2\nwarmup_steps: 2\neval_every: 3\nval_rows: 8\n"
        f"log_every: 1\nseed: {seed}\ntrack_analysis_samples: 0\n"
    )
    return recipe


def test_retraining_a_seed_reproduces_both_checkpoints(tmp_path, capsys):
    _toy_shards(tmp_path / "shards")
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        out = tmp_path / name
        assert train_main(["train", "--config", str(_toy_recipe(tmp_path, seed=seed)), "--out", str(out),
                           "--data", str(tmp_path / "shards"), "--device", "cpu"]) == 0
        runs[name] = out
    summary = json.loads((runs["a"] / "summary.json").read_text())
    assert summary["attention"]["backend"] == "reference" and summary["determinism"]["torch_deterministic_algorithms"]
    assert "time_limit_s" not in json.loads((runs["a"] / "softpick" / "train_config.json").read_text())
    capsys.readouterr()
    assert reproduce_main([str(runs["a"]), str(runs["b"]), "--out", str(tmp_path / "record.md")]) == 0
    table = capsys.readouterr().out
    assert table.count("| yes | yes |") == 2 and summary["sides"]["softmax"]["weights_sha256"][:16] in table
    # a committed record (summary.json alone) is compared the same way
    (tmp_path / "record").mkdir()
    (tmp_path / "record" / "summary.json").write_text((runs["a"] / "summary.json").read_text())
    assert reproduce_main([str(tmp_path / "record" / "summary.json"), str(runs["b"])]) == 0
    assert reproduce_main([str(runs["a"]), str(runs["c"])]) == 1  # another seed: other weights
    assert "NO: weights differ" in capsys.readouterr().out
    (runs["b"] / "softmax" / "model.safetensors").write_bytes(b"tampered")
    assert reproduce_main([str(runs["a"]), str(runs["b"])]) == 2  # weights no longer match their record
    assert "differs from the" in capsys.readouterr().err


def test_recipes_parse_and_reject_unknown_keys(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name in ("micro", "demo"):
        cfg = TrainConfig.from_yaml(root / "configs" / "train" / f"{name}.yaml")
        assert cfg.kinds == ("softmax", "softpick") and cfg.name == name
    assert TrainConfig.from_yaml(root / "configs/train/demo.yaml").seq_len >= 512
    bad = tmp_path / "bad.yaml"
    bad.write_text("stepz: 3\n")
    with pytest.raises(ValueError, match="stepz"):
        TrainConfig.from_yaml(bad)
    demo = root / "configs/train/demo.yaml"
    cfg = TrainConfig.from_yaml(demo, settings=["weight_decay=0.5", "model.layers=6", "rows=bos_first"])
    assert (cfg.weight_decay, cfg.model.layers, cfg.model.hidden, cfg.rows) == (0.5, 6, 512, "bos_first")
    for setting, message in (("rows=bos", "rows 'bos' is not one of"), ("weight_decay", "KEY=VALUE"),
                             ("model.layerz=2", "layerz"), ("optim.lr=1", "only model")):
        with pytest.raises(ValueError, match=message):
            TrainConfig.from_yaml(demo, settings=[setting])
    shards = tmp_path / "s"
    _toy_shards(shards)
    assert TokenShards.open(shards).train.dtype == np.uint16
