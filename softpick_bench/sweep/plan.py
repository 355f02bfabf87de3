"""The plan: every cell of a sweep, with its cache key and, if impossible, why.

Built from the validated config and the checkpoints' fingerprints (file hashes, no
model load), so a re-run knows what is done before any model is loaded. Each checkpoint
is inspected once (kind, weight headers against its config, fingerprint) and each pair
replicate is checked once (architecture and tokenizer); a bad checkpoint or pair does not
stop the plan: its cells carry `error` and the runner records them as failed, unloaded.

Two pairs naming the same checkpoint share its cells (one key, computed once); the plan
lists the cell under each pair, and `plan_manifest` writes that list to plan.json, which
is what attributes a record to every pair it belongs to (ResultStore.for_plan).
File inputs (an analysis source, a gptq calibration text) enter the key by content.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from softpick_bench import __version__
from softpick_bench.config import BUILTIN_FILES, SweepConfig
from softpick_bench.errors import CheckpointError, ConfigError, UnsupportedQuantError
from softpick_bench.eval.tasks import TaskSpec, get_task
from softpick_bench.models.checkpoint import architecture, fingerprint, read_config, resolve_folder, resolve_kind
from softpick_bench.models.pair import check_pair
from softpick_bench.models.weights import check_weights
from softpick_bench.quant.apply import check_spec
from softpick_bench.quant.format_quant import format_shape_problem
from softpick_bench.quant.transforms.pipeline import transforms_shape_problem
from softpick_bench.quant.base import get_backend
from softpick_bench.quant.spec import QuantSpec

CORE_PACKAGES = ("torch", "transformers")


POSITION_OPTIONS = ("seq_len", "max_length")  # task options that are token counts the model must hold


@dataclass(frozen=True)
class Cell:
    pair: str
    kind: str  # attention kind of this side of the pair
    checkpoint: str
    fingerprint: str
    quant: QuantSpec
    task: TaskSpec
    key: str
    skip_reason: str | None = None
    replicate: int = 0  # position of the checkpoint in the pair's list (training seed), 0-based
    checkpoint_given: str = ""  # the checkpoint as written in the config
    error: str | None = None  # the checkpoint or its pair is bad: recorded as failed, never loaded
    replicates: int = 1  # how many replicates the pair has (describe names the replicate when > 1)

    def describe(self) -> str:
        pair = f"{self.pair}#{self.replicate}" if self.replicates > 1 else self.pair
        return f"{pair}/{self.kind} {self.quant.label()} {self.task.name}"


@functools.lru_cache(maxsize=256)
def _versions(method: str, task_name: str) -> tuple[tuple[str, str], ...]:
    names = list(CORE_PACKAGES)
    if method != "none":
        names += list(get_backend(method).packages)
    names += list(get_task(task_name).packages)
    out = {"softpick_bench": __version__}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return tuple(out.items())


def package_versions(spec: QuantSpec, task: TaskSpec) -> dict[str, str]:
    """Versions of what can change this cell's numbers: core, the quantizer's, the task's."""
    return dict(_versions(spec.method, task.name))


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _by_content(options: dict, builtins: dict) -> dict:
    """Options with every file path replaced by its content hash: an edited file is a new cell."""
    out = dict(options)
    for name, builtin in builtins.items():
        value = out.get(name)
        if isinstance(value, str) and value != builtin and Path(value).is_file():
            st = os.stat(value)
            out[name] = _file_digest(str(Path(value).resolve()), st.st_mtime_ns, st.st_size)
    return out


def _spec_payload(spec: QuantSpec) -> dict:
    d = spec.to_dict()
    d["options"] = _by_content(d["options"], BUILTIN_FILES.get(spec.method, {}))
    return d


def _task_payload(task: TaskSpec) -> dict:
    return {"name": task.name, "options": _by_content(dict(task.options), BUILTIN_FILES.get(task.name, {}))}


def _key(fp: str, spec_part: dict, task_part: dict, versions: dict, config: SweepConfig) -> str:
    payload = {
        "checkpoint": fp,
        "quant": spec_part,
        "task": task_part,
        "versions": versions,
        "dtype": config.dtype,
        "device": config.device.split(":")[0],
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def cell_key(fp: str, spec: QuantSpec, task: TaskSpec, config: SweepConfig) -> str:
    return _key(fp, _spec_payload(spec), _task_payload(task), package_versions(spec, task), config)


def shape_problem(spec: QuantSpec, arch: dict) -> str | None:
    """Why `spec` cannot fit this architecture (a group size that divides no input width), or None."""
    if spec.method == "none" or spec.group_size is None:
        return None
    head_dim = arch.get("head_dim") or arch["hidden_size"] // arch["num_attention_heads"]
    widths = {
        "hidden_size": arch["hidden_size"],
        "intermediate_size": arch["intermediate_size"],
        "attention width (heads x head_dim)": arch["num_attention_heads"] * head_dim,
    }
    for name, width in widths.items():
        if width % spec.group_size:
            return f"group size {spec.group_size} does not divide the {name} {width} of this model"
    return None


@dataclass
class _Checkpoint:
    """What the plan learns about one checkpoint, once: its kind, fingerprint, architecture, or its fault."""

    kind: str | None = None
    fingerprint: str = ""
    arch: dict | None = None
    problem: str | None = None


def _inspect(source: str) -> _Checkpoint:
    try:
        folder = resolve_folder(source)
        config = read_config(folder)
        kind, _ = resolve_kind(config, source, None)
        fp = fingerprint(folder, extra=f"attention={kind}")
        check_weights(folder, config, source)
        return _Checkpoint(kind, fp, architecture(folder, source))
    except CheckpointError as exc:
        return _Checkpoint(problem=str(exc))
    except OSError as exc:
        return _Checkpoint(problem=f"checkpoint {source}: cannot read it: {exc}")


def _pair_problem(config: SweepConfig, pair, replicate: int, ckpts: dict, seen: dict) -> str | None:
    """Why this replicate of the pair cannot run (a bad checkpoint, a kind or architecture mismatch), or None."""
    where = f"{config.path}: pair {pair.name!r}" + (f" replicate {replicate}" if len(pair.replicates) > 1 else "")
    for declared, source in ckpts.items():
        info = seen[source]
        if info.problem:
            return f"{where}: {declared} checkpoint: {info.problem}"
        if info.kind != declared:
            return f"{where}: checkpoint {source} is listed as {declared} but its config says {info.kind}"
    key = (ckpts["softmax"], ckpts["softpick"])
    if key not in seen:
        try:
            check_pair(*key)
            seen[key] = None
        except CheckpointError as exc:  # PairMismatchError is one
            seen[key] = str(exc)
    return f"{where}: {seen[key]}" if seen[key] else None


def _check_positions(config: SweepConfig, source: str, arch: dict) -> None:
    limit = arch.get("max_position_embeddings")
    if not limit:
        return
    for i, task in enumerate(config.tasks):
        for name in POSITION_OPTIONS:
            value = dict(task.options).get(name)
            if isinstance(value, int) and value > limit:
                raise ConfigError(
                    f"{config.path}: tasks[{i}].{name}: {value} tokens, but checkpoint {source} has "
                    f"max_position_embeddings {limit}; valid: 2..{limit}"
                )


def _error_key(key: str, pair: str, replicate: int) -> str:
    """Error cells of a bad pair get keys of their own, so they never touch a sharing pair's record."""
    return hashlib.sha256(f"{key}|pair-error|{pair}|{replicate}".encode()).hexdigest()[:20]


def build_plan(config: SweepConfig) -> list[Cell]:
    """Every cell of the sweep; raises ConfigError for a task longer than a model's positions."""
    seen: dict = {}
    for pair in config.pairs:
        for ckpts in pair.replicates:
            for source in ckpts.values():
                if source not in seen:
                    seen[source] = _inspect(source)
                    if seen[source].arch:
                        _check_positions(config, source, seen[source].arch)
    spec_parts = [_spec_payload(spec) for spec in config.quant]  # once per spec, not per cell
    task_parts = [_task_payload(task) for task in config.tasks]
    reasons: dict[tuple[str, int], str | None] = {}
    cells = []
    for pair in config.pairs:
        given = pair.given or pair.replicates
        for r, ckpts in enumerate(pair.replicates):
            problem = _pair_problem(config, pair, r, ckpts, seen)
            for declared, source in ckpts.items():
                info = seen[source]
                fp = info.fingerprint or hashlib.sha256(f"unreadable:{source}".encode()).hexdigest()[:16]
                for s, spec in enumerate(config.quant):
                    reason = None
                    if not problem:
                        cached = (source, s)
                        if cached not in reasons:
                            try:
                                check_spec(spec, config.device)
                                reasons[cached] = (
                                    shape_problem(spec, info.arch)
                                    or transforms_shape_problem(spec, info.arch)
                                    or format_shape_problem(spec, info.arch)
                                )
                            except UnsupportedQuantError as exc:
                                reasons[cached] = str(exc)
                        reason = reasons[cached]
                    for t, task in enumerate(config.tasks):
                        key = _key(fp, spec_parts[s], task_parts[t], package_versions(spec, task), config)
                        if problem:
                            key = _error_key(key, pair.name, r)
                        cells.append(
                            Cell(pair.name, declared, source, fp, spec, task, key, reason, r,
                                 str(given[r][declared]), problem, len(pair.replicates))
                        )
    return cells


def plan_manifest(config: SweepConfig, cells: list[Cell]) -> dict:
    """plan.json: every cell of this plan with the pair, kind and replicate it belongs to.

    A key may appear under several pairs (shared checkpoints); the store's `for_plan`
    gives one record per entry here, labelled with the entry's pair, and only these keys.
    """
    return {
        "format": 2,
        "name": config.name,
        "config": str(Path(config.path).resolve()),
        "cells": [
            {
                "key": c.key,
                "cell": c.describe(),
                "pair": c.pair,
                "kind": c.kind,
                "replicate": c.replicate,
                "checkpoint": c.checkpoint,
                "checkpoint_given": c.checkpoint_given,
                "skip": c.skip_reason,
                "error": c.error,
            }
            for c in cells
        ],
        "skipped": [{"cell": c.describe(), "key": c.key, "reason": c.skip_reason} for c in cells if c.skip_reason],
    }
