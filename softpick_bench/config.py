"""Sweep configs: YAML, validated completely before any model is loaded.

Every error names the file, the key (as a dotted path) and the valid values.

    name: smoke                    # optional; defaults to the file's stem
    seed: 0
    dtype: float32                 # float32 | bfloat16 | float16
    device: cpu                    # cpu | cuda | cuda:N | auto
    pairs:
      - name: micro
        softmax: ../checkpoints/micro/softmax     # folder (relative to this file) or hub id
        softpick: ../checkpoints/micro/softpick   # or lists, one checkpoint per training seed
                                                  # (replicates, matched by position)
    quant:                         # grid entries; a list value expands (cartesian product)
      - {method: rtn, bits: [2, 3, 4, 8], group_size: [null, 64], symmetric: true}
    tasks:
      - {name: wikitext2, seq_len: 256, max_windows: 16}

The unquantized baseline is always part of the plan. Cells a backend cannot run (for
example bitsandbytes at 3 bits) are not errors: the plan lists them as skipped, with
the reason. Values no backend could ever mean (bits 9, an unknown method, a group
size of 0, activation granularity without activation bits, an option the method does not
have, an empty list, a duplicate YAML key, a count below 1) are errors, raised before
any checkpoint is loaded. Names are restricted to SAFE_NAME (they become folder names),
and a plan of more than MAX_PLAN_CELLS cells needs `allow_large_plan` (--allow-large-plan).
File inputs (an analysis `source`, a gptq `calibration` text) are resolved relative to the
config file; the plan keys them by their content.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

# Only light modules here: every config error must print before torch, transformers, lm_eval or the
# quant libraries load. Tasks and methods are checked against their declarations (eval/declared.py,
# quant/declared.py), not against the evaluators and backends that implement them.
from softpick_bench.errors import ConfigError, TaskError, shown
from softpick_bench.eval.declared import ANALYSIS_SOURCE
from softpick_bench.eval.harness.tasks import HARNESS_TASKS, SOURCES
from softpick_bench.eval.tasks import TaskSpec, make_spec, task_names
from softpick_bench.models.names import DTYPE_NAMES as DTYPES, HUB_ID as _HUB_ID
from softpick_bench.quant.declared import BNB_BLOCKSIZES as BLOCKSIZES, BNB_QUANT_TYPES as QUANT_TYPES
from softpick_bench.quant.declared import DEFAULT_CALIBRATION, declared_method, methods
from softpick_bench.quant.spec import GRIDS, QuantSpec
from softpick_bench.strict_yaml import YAMLInputError, load_yaml

TOP_KEYS = {"name", "seed", "dtype", "device", "pairs", "quant", "tasks"}
PAIR_KEYS = {"name", "softmax", "softpick"}
KINDS = ("softmax", "softpick")
SUITE_BITS = range(2, 9)
ACT_BITS = (4, 6, 8)
PROBS_BITS = (4, 8)
KV_GRANULARITIES = ("per_token", "per_head")
ACT_GRANULARITIES = ("per_token", "per_tensor")
QUANT_KEYS = {f.name for f in fields(QuantSpec)}
SEED_MAX = 2**32 - 1
# sweep and pair names become folder names and labels ("micro#1/softmax"): no separators, no dots first
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_PLAN_CELLS = 5000  # above this, allow_large_plan (--allow-large-plan) must be given
HARD_MAX_PLAN_CELLS = 200_000  # refused even with the flag: a typo, not a study


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# Range rules of method options, checked at config time (the backends' own `check` runs in the
# plan and turns what a backend cannot do on this device into a skipped cell). (test, valid values)
METHOD_OPTION_RULES: dict[str, dict[str, tuple]] = {
    "gptq": {
        "damp": (lambda v: _is_num(v) and 0 < v < 1, "a number in (0, 1)"),
        "act_order": (lambda v: isinstance(v, bool), "true or false"),
        "block_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "nsamples": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
        "seq_len": (lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
        "calibration": (lambda v: isinstance(v, str) and v != "", f"{DEFAULT_CALIBRATION!r} or a text file path"),
    },
    "hqq": {"axis": (lambda v: v in (0, 1) and _is_int(v), "0 or 1")},
    "bnb": {
        "quant_type": (lambda v: v in QUANT_TYPES, f"one of {list(QUANT_TYPES)}"),
        "blocksize": (lambda v: _is_int(v) and v in BLOCKSIZES, f"one of {list(BLOCKSIZES)}"),
        "double_quant": (lambda v: isinstance(v, bool), "true or false"),
        "threshold": (lambda v: _is_num(v) and v >= 0, "a number >= 0"),
    },
}


def _positive(low: int):
    return lambda v: v >= low, f"an integer >= {low}"


# Range rules of task options whose modules (perplexity, harness) declare none themselves.
_HARNESS_RULES = {
    "limit": _positive(1),
    "num_fewshot": _positive(0),
    "batch_size": _positive(1),
    "batch_tokens": _positive(2),
    "max_length": _positive(2),
    "source": (lambda v: v in SOURCES, f"one of {list(SOURCES)}"),
    "bootstrap_iters": _positive(0),
}
TASK_OPTION_RULES: dict[str, dict[str, tuple]] = {
    "wikitext2": {"seq_len": _positive(2), "batch_size": _positive(1), "max_windows": _positive(1)},
    **{name: _HARNESS_RULES for name in HARNESS_TASKS},
}
FILE_OPTIONS = {"analysis": ("source",)}  # task options naming a file (else a built-in name)
BUILTIN_FILES = {"analysis": {"source": ANALYSIS_SOURCE}, "gptq": {"calibration": DEFAULT_CALIBRATION}}


@dataclass(frozen=True)
class PairConfig:
    name: str
    replicates: tuple[dict[str, str], ...]  # one per training seed: attention kind -> folder or hub id
    given: tuple[dict[str, str], ...] = ()  # the same checkpoints as written in the config

    @property
    def checkpoints(self) -> dict[str, str]:
        """The first replicate (the only one of a pair with one checkpoint per kind)."""
        return self.replicates[0]


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

    def cell_count(self) -> int:
        sides = sum(len(KINDS) * len(p.replicates) for p in self.pairs)
        return sides * len(self.quant) * len(self.tasks)


class _Where:
    """Builds error messages that name the file and the key."""

    def __init__(self, path: str):
        self.path = path

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {message}")


def _check_keys(where: _Where, key: str, given: dict, valid: set[str], required: set[str] = frozenset()) -> None:
    unknown = sorted(set(given) - valid, key=str)
    if unknown:
        name = shown(unknown[0]) if not isinstance(unknown[0], str) else unknown[0][:60]
        raise where.error(f"{key}.{name}" if key else name, f"unknown key; valid keys: {sorted(valid)}")
    missing = sorted(required - set(given))
    if missing:
        raise where.error(f"{key}.{missing[0]}" if key else missing[0], "required key is missing")


def _check_name(where: _Where, key: str, name: Any) -> str:
    if not isinstance(name, str) or not SAFE_NAME.match(name):
        raise where.error(
            key, f"must be 1-64 characters of letters, digits, '_', '-', '.', starting with a letter or digit; "
            f"got {shown(name)}"
        )
    return name


def _resolve_device(where: _Where, device: Any) -> str:
    if not isinstance(device, str):
        raise where.error("device", f"must be a string, got {shown(device)}; valid: cpu, cuda, cuda:N, auto")
    if device == "cpu":
        return device
    if device != "auto" and device != "cuda" and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise where.error("device", f"unknown device {shown(device)}; valid: cpu, cuda, cuda:N, auto")
    import torch  # only to ask for CUDA: a cpu sweep, or an unknown device, is checked without it

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise where.error("device", f"{device!r} asked for but no CUDA device is available; valid here: cpu, auto")
    return device


def _resolve_checkpoint(where: _Where, key: str, value: Any, base: Path) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise where.error(key, f"must be a folder path or hub id, got {shown(value)}")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise where.error(key, f"folder {path} has no config.json; give a checkpoint folder")
        return str(path.resolve())
    if path.exists():
        raise where.error(key, f"{path} is a file; give the checkpoint folder that holds config.json")
    if value.startswith((".", "/", "~")) or not _HUB_ID.match(value):
        raise where.error(key, f"checkpoint {shown(value)} not found (looked for folder {path}); "
                          "or give a hub id owner/name")
    return value  # a hub id: fetched when the sweep loads it


def _checkpoint_list(where: _Where, key: str, value: Any) -> list:
    if isinstance(value, list):
        if not value:
            raise where.error(key, "empty list; give a checkpoint, or a list of one per training seed")
        return value
    return [value]


def _parse_pairs(where: _Where, raw: Any, base: Path) -> tuple[PairConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise where.error("pairs", "must be a non-empty list of {name, softmax, softpick}")
    pairs, names = [], set()
    for i, entry in enumerate(raw):
        key = f"pairs[{i}]"
        if not isinstance(entry, dict):
            raise where.error(key, f"must be a mapping with keys {sorted(PAIR_KEYS)}, got {shown(entry)}")
        _check_keys(where, key, entry, PAIR_KEYS, PAIR_KEYS)
        name = _check_name(where, f"{key}.name", entry["name"])
        if name in names:
            raise where.error(f"{key}.name", f"pair name {name!r} is used twice; give each pair its own name")
        names.add(name)
        given = {kind: _checkpoint_list(where, f"{key}.{kind}", entry[kind]) for kind in KINDS}
        lengths = {kind: len(v) for kind, v in given.items()}
        if len(set(lengths.values())) > 1:
            raise where.error(
                key, f"softmax and softpick list different numbers of checkpoints ({lengths}); replicates are "
                "matched by position (seed i of softmax with seed i of softpick), so give the same number"
            )
        replicates, written = [], []
        for r in range(lengths["softmax"]):
            at = {kind: f"{key}.{kind}" + (f"[{r}]" if isinstance(entry[kind], list) else "") for kind in KINDS}
            replicates.append({kind: _resolve_checkpoint(where, at[kind], given[kind][r], base) for kind in KINDS})
            written.append({kind: given[kind][r] for kind in KINDS})
        pairs.append(PairConfig(name=name, replicates=tuple(replicates), given=tuple(written)))
    return tuple(pairs)


def _axes(where: _Where, key: str, entry: dict) -> list[list[tuple[str, Any]]]:
    """Grid axes of one entry: a list value expands (skip and transforms are lists: only a list of lists)."""
    axes = []
    for name, value in entry.items():
        if name in ("skip", "transforms"):
            values = value if value and isinstance(value, list) and all(isinstance(v, list) for v in value) else [value]
        else:
            if isinstance(value, list) and not value:
                raise where.error(f"{key}.{name}", "empty list: the entry would expand to nothing; give a value")
            values = value if isinstance(value, list) else [value]
        axes.append([(name, v) for v in values])
    return axes


def _check_int(where: _Where, key: str, value: Any, valid, what: str) -> None:
    if value is None:
        return
    if not _is_int(value) or value not in valid:
        raise where.error(key, f"{what} must be one of {list(valid)}, got {shown(value)}")


def _resolve_file(where: _Where, key: str, value: Any, builtin: str, base: Path) -> str:
    """A file option: the built-in name as is, else a path resolved against the config's folder."""
    if value == builtin:
        return value
    if not isinstance(value, str) or not value or "\x00" in value:
        raise where.error(key, f"must be {builtin!r} or a text file path, got {shown(value)}")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise where.error(key, f"file {path} not found; valid: {builtin!r} or an existing text file")
    return str(path.resolve())


def _check_options(where: _Where, key: str, method: str, options: dict, base: Path) -> dict:
    declared = declared_method(method).options
    rules = METHOD_OPTION_RULES.get(method, {})
    out = {}
    for name, value in options.items():
        if name not in declared:
            raise where.error(
                f"{key}.options.{str(name)[:60]}",
                f"method {method!r} has no such option; valid: {sorted(declared) or 'none'}",
            )
        if name in rules and not rules[name][0](value):
            raise where.error(f"{key}.options.{name}", f"must be {rules[name][1]}, got {shown(value)}")
        if name in BUILTIN_FILES.get(method, {}):
            value = _resolve_file(where, f"{key}.options.{name}", value, BUILTIN_FILES[method][name], base)
        out[name] = value
    return out


def _validate_spec(where: _Where, key: str, d: dict, base: Path) -> QuantSpec:
    method = d.get("method", "none")
    if method not in methods():
        raise where.error(f"{key}.method", f"unknown method {shown(method)}; valid: {', '.join(methods())}")
    bits = d.get("bits")
    if method == "none":
        for k in ("bits", "group_size", "options"):
            if d.get(k) not in (None, {}):
                raise where.error(f"{key}.{k}", f"method 'none' quantizes no weights, so {k} cannot be set")
    else:
        valid_bits = sorted(set(SUITE_BITS) | declared_method(method).bits)
        if bits is None:
            raise where.error(f"{key}.bits", f"method {method!r} needs bits; valid: {valid_bits}")
        _check_int(where, f"{key}.bits", bits, valid_bits, "bits")
    gs = d.get("group_size")
    if gs is not None and (not _is_int(gs) or gs <= 0):
        raise where.error(f"{key}.group_size", f"must be a positive integer or null (per channel), got {shown(gs)}")
    if not isinstance(d.get("symmetric", True), bool):
        raise where.error(f"{key}.symmetric", f"must be true or false, got {shown(d['symmetric'])}")
    if d.get("grid", "full") not in GRIDS:
        raise where.error(f"{key}.grid", f"unknown grid {shown(d['grid'])}; valid: {list(GRIDS)}")
    if d.get("grid", "full") != "full" and (method == "none" or not d.get("symmetric", True)):
        raise where.error(f"{key}.grid", f"grid {shown(d['grid'])} applies to symmetric weight quantization only")
    skip = d.get("skip", None)
    if skip is not None and (not isinstance(skip, list) or not all(isinstance(s, str) for s in skip)):
        raise where.error(f"{key}.skip", f"must be a list of module-name parts like ['lm_head'], got {shown(skip)}")
    options = d.get("options", {})
    if not isinstance(options, dict):
        raise where.error(f"{key}.options", f"must be a mapping of method options, got {shown(options)}")
    if method != "none":
        d["options"] = _check_options(where, key, method, options, base)
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
            raise where.error(f"{key}.{gran_key}", f"unknown granularity {shown(gran)}; valid: {list(valid)}")
        if d.get(bits_key) is not None and gran is None:
            d[gran_key] = default
    if skip is None:
        d.pop("skip", None)
    return QuantSpec.from_dict(d)


def _parse_quant(where: _Where, raw: Any, base: Path, cells_per_spec: int) -> tuple[QuantSpec, ...]:
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise where.error("quant", "must be a list of grid entries like {method: rtn, bits: [2, 4, 8]}")
    grids = []
    for i, entry in enumerate(raw):
        key = f"quant[{i}]"
        if not isinstance(entry, dict):
            raise where.error(key, f"must be a mapping of quant spec fields, got {shown(entry)}")
        _check_keys(where, key, entry, QUANT_KEYS)
        grids.append((key, _axes(where, key, entry)))
    bound = cells_per_spec * (1 + sum(math.prod(len(a) for a in axes) for _, axes in grids))
    if bound > HARD_MAX_PLAN_CELLS:
        raise where.error("quant", f"the grid expands to up to {bound} cells, more than the {HARD_MAX_PLAN_CELLS} "
                          "any plan may have; split the sweep")
    specs = {QuantSpec().to_json(): QuantSpec()}  # keyed by canonical JSON: dedup in linear time
    for key, axes in grids:
        for combo in itertools.product(*axes):
            spec = _validate_spec(where, key, dict(combo), base)
            specs.setdefault(spec.to_json(), spec)
    return tuple(specs.values())


def _check_task_rules(where: _Where, key: str, spec: TaskSpec) -> None:
    options = dict(spec.options)
    for name, (test, valid) in TASK_OPTION_RULES.get(spec.name, {}).items():
        value = options.get(name)
        if value is not None and not test(value):
            raise where.error(f"{key}.{name}", f"task {spec.name!r}: must be {valid}, got {shown(value)}")
    if spec.name in HARNESS_TASKS and options.get("source") == "local" and options.get("num_fewshot"):
        raise where.error(
            f"{key}.num_fewshot", f"task {spec.name!r}: {options['num_fewshot']} few-shot examples need the "
            "training split, which the shipped (local) data does not have; valid: 0, or source: hub"
        )


def _parse_tasks(where: _Where, raw: Any, base: Path) -> tuple[TaskSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise where.error("tasks", f"must be a non-empty list of {{name: ...}}; valid names: {task_names()}")
    tasks = []
    for i, entry in enumerate(raw):
        key = f"tasks[{i}]"
        if not isinstance(entry, dict) or "name" not in entry:
            raise where.error(key, f"must be a mapping with a 'name'; valid names: {task_names()}")
        name = entry["name"]
        options = {k: v for k, v in entry.items() if k != "name"}
        for option in FILE_OPTIONS.get(name, ()):
            if option in options:
                builtin = BUILTIN_FILES[name][option]
                options[option] = _resolve_file(where, f"{key}.{option}", options[option], builtin, base)
        try:
            spec = make_spec(name, options)
        except TaskError as exc:
            raise where.error(key, str(exc)) from None
        _check_task_rules(where, key, spec)
        if spec in tasks:
            raise where.error(key, f"task {spec.name} with these options is listed twice")
        tasks.append(spec)
    return tuple(tasks)


def load_config(path: str | Path, allow_large_plan: bool = False) -> SweepConfig:
    """Parse and validate a sweep config; raises ConfigError naming file and key.

    allow_large_plan: accept a plan of more than MAX_PLAN_CELLS cells (never more than HARD_MAX_PLAN_CELLS).
    """
    path = Path(path)
    where = _Where(str(path))
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = load_yaml(path)
    except YAMLInputError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping with keys {sorted(TOP_KEYS)}")
    _check_keys(where, "", raw, TOP_KEYS, {"pairs", "tasks"})
    seed = raw.get("seed", 0)
    if not _is_int(seed) or not 0 <= seed <= SEED_MAX:
        raise where.error("seed", f"must be an integer in 0..{SEED_MAX} (2^32 - 1), got {shown(seed)}")
    dtype = raw.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise where.error("dtype", f"unknown dtype {shown(dtype)}; valid: {', '.join(DTYPES)}")
    name = _check_name(where, "name", raw.get("name", path.stem))
    device = _resolve_device(where, raw.get("device", "cpu"))
    pairs = _parse_pairs(where, raw["pairs"], path.parent)
    tasks = _parse_tasks(where, raw["tasks"], path.parent)
    sides = sum(len(KINDS) * len(p.replicates) for p in pairs)
    quant = _parse_quant(where, raw.get("quant"), path.parent, sides * len(tasks))
    config = SweepConfig(path=str(path), name=name, seed=seed, dtype=dtype, device=device,
                         pairs=pairs, quant=quant, tasks=tasks)
    if config.cell_count() > MAX_PLAN_CELLS and not allow_large_plan:
        raise where.error(
            "quant", f"the plan has {config.cell_count()} cells ({sides} checkpoints x {len(quant)} quant specs x "
            f"{len(tasks)} tasks), more than {MAX_PLAN_CELLS}; pass --allow-large-plan if that is meant"
        )
    return config
