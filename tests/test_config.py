"""Sweep configs: malformed inputs are rejected, naming the file and the offending key."""

from pathlib import Path

import pytest

from softpick_bench.config import load_config
from softpick_bench.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PAIR = {"name": "p", "softmax": str(ROOT / "checkpoints/micro/softmax"), "softpick": str(ROOT / "checkpoints/micro/softpick")}
GOOD = {
    "seed": 0,
    "dtype": "float32",
    "device": "cpu",
    "pairs": [PAIR],
    "quant": [{"method": "rtn", "bits": [2, 4], "group_size": 64}],
    "tasks": [{"name": "wikitext2", "seq_len": 64, "max_windows": 2}],
}


def _write(tmp_path, cfg) -> Path:
    import yaml

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _with(**changes):
    cfg = {k: v for k, v in GOOD.items()}
    for key, value in changes.items():
        if value is None:
            cfg.pop(key)
        else:
            cfg[key] = value
    return cfg


def test_good_config_expands_grid(tmp_path):
    cfg = load_config(_write(tmp_path, GOOD))
    assert [s.label() for s in cfg.quant] == ["none", "rtn-w2-g64", "rtn-w4-g64"]
    assert cfg.tasks[0].option("batch_size") == 8  # defaults are made explicit
    assert cfg.pairs[0].checkpoints["softpick"].endswith("checkpoints/micro/softpick")


MALFORMED = [
    ("unknown top-level key", _with(extra=1), "extra", "valid keys"),
    ("missing pairs", _with(pairs=None), "pairs", "required"),
    ("unknown method", _with(quant=[{"method": "awq", "bits": 4}]), "quant[0].method", "valid:"),
    ("bits above 8", _with(quant=[{"method": "rtn", "bits": 9}]), "quant[0].bits", "one of"),
    ("bits below 2", _with(quant=[{"method": "rtn", "bits": [4, 1]}]), "quant[0].bits", "one of"),
    ("bits as string", _with(quant=[{"method": "rtn", "bits": "4"}]), "quant[0].bits", "one of"),
    ("rtn without bits", _with(quant=[{"method": "rtn"}]), "quant[0].bits", "needs bits"),
    ("unknown quant field", _with(quant=[{"method": "rtn", "bits": 4, "grp": 64}]), "quant[0].grp", "valid keys"),
    ("zero group size", _with(quant=[{"method": "rtn", "bits": 4, "group_size": 0}]), "quant[0].group_size", "positive"),
    ("bits on baseline", _with(quant=[{"method": "none", "bits": 4}]), "quant[0].bits", "method 'none'"),
    ("granularity without bits", _with(quant=[{"method": "rtn", "bits": 4, "kv_granularity": "per_token"}]),
     "quant[0].kv_granularity", "without kv_bits"),
    ("activation bits 5", _with(quant=[{"method": "rtn", "bits": 4, "act_bits": 5}]), "quant[0].act_bits", "[4, 6, 8]"),
    ("missing checkpoint", _with(pairs=[dict(PAIR, softpick="./no/such/folder")]), "pairs[0].softpick", "not found"),
    ("pair without softpick", _with(pairs=[{"name": "p", "softmax": PAIR["softmax"]}]), "pairs[0].softpick", "required"),
    ("unknown task", _with(tasks=[{"name": "mmlu"}]), "tasks[0]", "valid"),
    ("unknown task option", _with(tasks=[{"name": "wikitext2", "stride": 5}]), "tasks[0]", "stride"),
    ("bad dtype", _with(dtype="float8"), "dtype", "bfloat16"),
    ("bad device", _with(device="tpu"), "device", "cpu, cuda"),
    ("seed as string", _with(seed="zero"), "seed", "integer"),
    ("empty tasks", _with(tasks=[]), "tasks", "non-empty"),
]


@pytest.mark.parametrize("label,cfg,key,hint", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_config_rejected_naming_key(tmp_path, label, cfg, key, hint):
    path = _write(tmp_path, cfg)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message, message
    assert key in message, message
    assert hint in message, message


def test_not_yaml_mapping(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


def test_shipped_configs_validate():
    import torch
    import yaml

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        if str(yaml.safe_load(path.read_text()).get("device", "cpu")).startswith("cuda") and not torch.cuda.is_available():
            with pytest.raises(ConfigError, match="no CUDA device"):  # refused before any work
                load_config(path)
        else:
            load_config(path)


@pytest.mark.parametrize(
    "entry,hint",
    [
        ({"method": "rtn", "bits": 4, "grid": "half"}, "unknown grid"),
        ({"method": "rtn", "bits": 4, "symmetric": False, "grid": "restricted"}, "symmetric weight quantization"),
        ({"method": "none", "kv_bits": 4, "grid": "restricted"}, "symmetric weight quantization"),
    ],
)
def test_grid_key_validated(tmp_path, entry, hint):
    with pytest.raises(ConfigError, match=hint) as err:
        load_config(_write(tmp_path, _with(quant=[entry])))
    assert "quant[0].grid" in str(err.value)
    good = load_config(_write(tmp_path, _with(quant=[{"method": "rtn", "bits": 4, "grid": ["full", "restricted"]}])))
    assert [s.label() for s in good.quant] == ["none", "rtn-w4", "rtn-w4-restricted"]
