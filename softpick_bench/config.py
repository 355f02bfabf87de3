"""Sweep configs: YAML, validated completely before any model is loaded.

Every error names the file, the key (as a dotted path) and the valid values.

    name: smoke                    # optional; defaults to the file's stem
    seed: 0
    dtype: float32                 # float32 | bfloat16 | float16
    device: cpu                    # cpu | cuda | cuda:N | auto
    pairs:
      - name: micro
        softmax: ../checkpoints/micro/softmax     # folder (relative to this file) or hub id
        softpick: ../checkpoints/micro/softpick
    quant:                         # grid entries; a list value expands (cartesian product)
      - {method: rtn, bits: [2, 3, 4, 8], group_size: [null, 64], symmetric: true}
    tasks:
      - {name: wikitext2, seq_len: 256, max_windows: 16}

The unquantized baseline is always part of the plan. Cells a backend cannot run (for
example bitsandbytes at 3 bits) are not errors: the plan lists them as skipped, with
the reason. Values no backend could ever mean (bits 9, an unknown method, a group
size of 0, activation granularity without activation bits) are errors.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from softpick_bench.errors import ConfigError, TaskError
from softpick_bench.eval.tasks import TaskSpec, make_spec, task_names
from softpick_bench.models.checkpoint import _HUB_ID, DTYPES
from softpick_bench.quant.base import get_backend, methods
from softpick_bench.quant.spec import QuantSpec

TOP_KEYS = {"name", "seed", "dtype", "device", "pairs", "quant", "tasks"}
PAIR_KEYS = {"name", "softmax", "softpick"}
SUITE_BITS = range(2, 9)
ACT_BITS = (4, 6, 8)
PROBS_BITS = (4, 8)
KV_GRANULARITIES = ("per_token", "per_head")
ACT_GRANULARITIES = ("per_token", "per_tensor")
QUANT_KEYS = {f.name for f in fields(QuantSpec)}


@dataclass(frozen=True)
class PairConfig:
    name: str
    checkpoints: dict[str, str]  # attention kind -> folder or hub id


@dataclass(frozen=True)
class SweepConfig:
    path: str
    name: str
    seed: int
    dtype: str
    device: str
    pairs: tuple[PairConfig, ...]
    quant: tuple[QuantSpec, ...]  # the baseline first, then the grid, duplicates removed
    tasks: tuple[TaskSpec, ...]


class _Where:
    """Builds error messages that name the file and the key."""

    def __init__(self, path: str):
        self.path = path

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {message}")


def _check_keys(where: _Where, key: str, given: dict, valid: set[str], required: set[str] = frozenset()) -> None:
    unknown = sorted(set(given) - valid)
    if unknown:
        raise where.error(f"{key}.{unknown[0]}" if key else unknown[0], f"unknown key; valid keys: {sorted(valid)}")
    missing = sorted(required - set(given))
    if missing:
        raise where.error(f"{key}.{missing[0]}" if key else missing[0], "required key is missing")


def _resolve_device(where: _Where, device: Any) -> str:
    import torch

    if not isinstance(device, str):
        raise where.error("device", f"must be a string, got {device!r}; valid: cpu, cuda, cuda:N, auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise where.error("device", f"{device!r} asked for but no CUDA device is available; valid here: cpu, auto")
        return device
    raise where.error("device", f"unknown device {device!r}; valid: cpu, cuda, cuda:N, auto")


def _resolve_checkpoint(where: _Where, key: str, value: Any, base: Path) -> str:
    if not isinstance(value, str) or not value:
        raise where.error(key, f"must be a folder path or hub id, got {value!r}")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise where.error(key, f"folder {path} has no config.json; give a checkpoint folder")
        return str(path.resolve())
    if value.startswith((".", "/", "~")) or not _HUB_ID.match(value):
        raise where.error(key, f"checkpoint {value!r} not found (looked for folder {path}); or give a hub id owner/name")
    return value  # a hub id: fetched when the sweep loads it


def _parse_pairs(where: _Where, raw: Any, base: Path) -> tuple[PairConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise where.error("pairs", "must be a non-empty list of {name, softmax, softpick}")
    pairs, names = [], set()
    for i, entry in enumerate(raw):
        key = f"pairs[{i}]"
        if not isinstance(entry, dict):
            raise where.error(key, f"must be a mapping with keys {sorted(PAIR_KEYS)}, got {entry!r}")
        _check_keys(where, key, entry, PAIR_KEYS, PAIR_KEYS)
        name = entry["name"]
        if not isinstance(name, str) or not name or name in names:
            raise where.error(f"{key}.name", f"must be a unique non-empty string, got {name!r}")
        names.add(name)
        ckpts = {kind: _resolve_checkpoint(where, f"{key}.{kind}", entry[kind], base) for kind in ("softmax", "softpick")}
        pairs.append(PairConfig(name=name, checkpoints=ckpts))
    return tuple(pairs)


def _expand(entry: dict) -> list[dict]:
    """Cartesian product over list values (skip and transforms are lists: only a list of lists expands)."""
    axes = []
    for key, value in entry.items():
        if key in ("skip", "transforms"):
            values = value if value and all(isinstance(v, list) for v in value) else [value]
        else:
            values = value if isinstance(value, list) else [value]
        axes.append([(key, v) for v in values])
    return [dict(combo) for combo in itertools.product(*axes)]


def _check_int(where: _Where, key: str, value: Any, valid, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value not in valid:
        raise where.error(key, f"{what} must be one of {list(valid)}, got {value!r}")


def _validate_spec(where: _Where, key: str, d: dict) -> QuantSpec:
    method = d.get("method", "none")
    if method not in methods():
        raise where.error(f"{key}.method", f"unknown method {method!r}; valid: {', '.join(methods())}")
    bits = d.get("bits")
    if method == "none":
        for k in ("bits", "group_size", "options"):
            if d.get(k) not in (None, {}):
                raise where.error(f"{key}.{k}", f"method 'none' quantizes no weights, so {k} cannot be set")
    else:
        valid_bits = sorted(set(SUITE_BITS) | get_backend(method).bits)
        if bits is None:
            raise where.error(f"{key}.bits", f"method {method!r} needs bits; valid: {valid_bits}")
        _check_int(where, f"{key}.bits", bits, valid_bits, "bits")
    gs = d.get("group_size")
    if gs is not None and (isinstance(gs, bool) or not isinstance(gs, int) or gs <= 0):
        raise where.error(f"{key}.group_size", f"must be a positive integer or null (per channel), got {gs!r}")
    if not isinstance(d.get("symmetric", True), bool):
        raise where.error(f"{key}.symmetric", f"must be true or false, got {d['symmetric']!r}")
    skip = d.get("skip", None)
    if skip is not None and (not isinstance(skip, list) or not all(isinstance(s, str) for s in skip)):
        raise where.error(f"{key}.skip", f"must be a list of module-name parts like ['lm_head'], got {skip!r}")
    if not isinstance(d.get("options", {}), dict):
        raise where.error(f"{key}.options", f"must be a mapping of method options, got {d['options']!r}")
    _check_int(where, f"{key}.act_bits", d.get("act_bits"), ACT_BITS, "activation bits")
    _check_int(where, f"{key}.kv_bits", d.get("kv_bits"), SUITE_BITS, "KV-cache bits")
    _check_int(where, f"{key}.probs_bits", d.get("probs_bits"), PROBS_BITS, "attention-probability bits")
    for bits_key, gran_key, valid, default in (
        ("act_bits", "act_granularity", ACT_GRANULARITIES, "per_token"),
        ("kv_bits", "kv_granularity", KV_GRANULARITIES, "per_token"),
    ):
        gran = d.get(gran_key)
        if gran is not None and d.get(bits_key) is None:
            raise where.error(f"{key}.{gran_key}", f"set without {bits_key}; give {bits_key} too or drop it")
        if gran is not None and gran not in valid:
            raise where.error(f"{key}.{gran_key}", f"unknown granularity {gran!r}; valid: {list(valid)}")
        if d.get(bits_key) is not None and gran is None:
            d[gran_key] = default
    if skip is None:
        d.pop("skip", None)
    return QuantSpec.from_dict(d)


def _parse_quant(where: _Where, raw: Any) -> tuple[QuantSpec, ...]:
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise where.error("quant", "must be a list of grid entries like {method: rtn, bits: [2, 4, 8]}")
    specs = [QuantSpec()]
    for i, entry in enumerate(raw):
        key = f"quant[{i}]"
        if not isinstance(entry, dict):
            raise where.error(key, f"must be a mapping of quant spec fields, got {entry!r}")
        _check_keys(where, key, entry, QUANT_KEYS)
        for d in _expand(entry):
            spec = _validate_spec(where, key, d)
            if spec not in specs:
                specs.append(spec)
    return tuple(specs)


def _parse_tasks(where: _Where, raw: Any) -> tuple[TaskSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise where.error("tasks", f"must be a non-empty list of {{name: ...}}; valid names: {task_names()}")
    tasks = []
    for i, entry in enumerate(raw):
        key = f"tasks[{i}]"
        if not isinstance(entry, dict) or "name" not in entry:
            raise where.error(key, f"must be a mapping with a 'name'; valid names: {task_names()}")
        options = {k: v for k, v in entry.items() if k != "name"}
        try:
            spec = make_spec(entry["name"], options)
        except TaskError as exc:
            raise where.error(key, str(exc)) from None
        if spec in tasks:
            raise where.error(key, f"task {spec.name} with these options is listed twice")
        tasks.append(spec)
    return tuple(tasks)


def load_config(path: str | Path) -> SweepConfig:
    """Parse and validate a sweep config; raises ConfigError naming file and key."""
    path = Path(path)
    where = _Where(str(path))
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping with keys {sorted(TOP_KEYS)}")
    _check_keys(where, "", raw, TOP_KEYS, {"pairs", "tasks"})
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise where.error("seed", f"must be an integer, got {seed!r}")
    dtype = raw.get("dtype", "float32")
    if dtype not in DTYPES:
        raise where.error("dtype", f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise where.error("name", f"must be a non-empty string, got {name!r}")
    return SweepConfig(
        path=str(path),
        name=name,
        seed=seed,
        dtype=dtype,
        device=_resolve_device(where, raw.get("device", "cpu")),
        pairs=_parse_pairs(where, raw["pairs"], path.parent),
        quant=_parse_quant(where, raw.get("quant")),
        tasks=_parse_tasks(where, raw["tasks"]),
    )
