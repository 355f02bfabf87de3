"""The plan: every cell of a sweep, with its cache key and, if impossible, why.

Built from the validated config and the checkpoints' fingerprints (file hashes, no
model load), so a re-run knows what is done before any model is loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from softpick_bench import __version__
from softpick_bench.config import SweepConfig
from softpick_bench.errors import PairMismatchError, UnsupportedQuantError
from softpick_bench.eval.tasks import TaskSpec, get_task
from softpick_bench.models.checkpoint import architecture, fingerprint, read_config, resolve_folder, resolve_kind
from softpick_bench.quant.apply import check_spec
from softpick_bench.quant.format_quant import format_shape_problem
from softpick_bench.quant.transforms.pipeline import transforms_shape_problem
from softpick_bench.quant.base import get_backend
from softpick_bench.quant.spec import QuantSpec

CORE_PACKAGES = ("torch", "transformers")


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

    def describe(self) -> str:
        return f"{self.pair}/{self.kind} {self.quant.label()} {self.task.name}"


def package_versions(spec: QuantSpec, task: TaskSpec) -> dict[str, str]:
    """Versions of what can change this cell's numbers: core, the quantizer's, the task's."""
    names = list(CORE_PACKAGES)
    if spec.method != "none":
        names += list(get_backend(spec.method).packages)
    names += list(get_task(task.name).packages)
    out = {"softpick_bench": __version__}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def cell_key(fp: str, spec: QuantSpec, task: TaskSpec, config: SweepConfig) -> str:
    payload = {
        "checkpoint": fp,
        "quant": json.loads(spec.to_json()),
        "task": json.loads(task.to_json()),
        "versions": package_versions(spec, task),
        "dtype": config.dtype,
        "device": config.device.split(":")[0],
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


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


def build_plan(config: SweepConfig) -> list[Cell]:
    cells = []
    for pair in config.pairs:
        for declared_kind, source in pair.checkpoints.items():
            folder = resolve_folder(source)
            kind, _ = resolve_kind(read_config(folder), source, None)
            if kind != declared_kind:
                raise PairMismatchError(
                    f"{config.path}: pair {pair.name!r}: checkpoint {source} is listed as {declared_kind} "
                    f"but its config says {kind}"
                )
            fp = fingerprint(folder, extra=f"attention={kind}")
            arch = architecture(folder, source)
            for spec in config.quant:
                try:
                    check_spec(spec, config.device)
                    reason = (
                        shape_problem(spec, arch)
                        or transforms_shape_problem(spec, arch)
                        or format_shape_problem(spec, arch)
                    )
                except UnsupportedQuantError as exc:
                    reason = str(exc)
                for task in config.tasks:
                    cells.append(
                        Cell(pair.name, kind, source, fp, spec, task, cell_key(fp, spec, task, config), reason)
                    )
    return cells
