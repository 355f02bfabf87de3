"""The quant spec: a frozen, JSON-serialisable value naming one cell's quantization.

Its canonical JSON is part of every cache key and every result row, so two specs that
mean the same thing serialise the same (options sorted, defaults explicit).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from softpick_bench.errors import UnsupportedQuantError

DEFAULT_SKIP = ("embed_tokens", "lm_head")
GRIDS = ("full", "restricted")  # symmetric integer grid conventions, see quant/rtn.scale_zero


@dataclass(frozen=True)
class QuantSpec:
    """What to quantize and how.

    method: weight quantizer ("none" for the unquantized baseline, "rtn", ...).
    bits: weight bit width (None with method "none").
    group_size: weights per scale along the input dimension; None = one scale per output channel.
    symmetric: symmetric (zero-point free) or asymmetric (with zero point) integer grid.
    grid: symmetric grid convention: "full" (all 2^b levels, scale 2 max|w| / (2^b - 1), the
        field's convention) or "restricted" (2^b - 1 levels, scale max|w| / (2^(b-1) - 1));
        only "full" goes with an asymmetric grid or no weight quantization.
    skip: module-name parts left unquantized (matched against each dotted name component).
    options: method-specific settings, as sorted (key, value) pairs.
    act_bits / act_granularity: fake quantization of every quantized linear layer's input
        ("per_token" dynamic or "per_tensor" static, calibrated).
    kv_bits / kv_granularity: keys and values quantized inside attention ("per_token" or "per_head").
    probs_bits: attention weights quantized before they multiply V.
    transforms: ordered model transforms run before the weight method (quant/transforms/),
        each a name or {name: {options}}, e.g. [hadamard] or [{smoothquant: {alpha: 0.5}}].
    kv_keep_first: the first N positions' keys and values stay in full precision.
    act_format: "int" (the integer grid) or a float format of quant/format_quant.py.
    """

    method: str = "none"
    bits: int | None = None
    group_size: int | None = None
    symmetric: bool = True
    grid: str = "full"
    skip: tuple[str, ...] = DEFAULT_SKIP
    options: tuple[tuple[str, Any], ...] = ()
    act_bits: int | None = None
    act_granularity: str | None = None
    kv_bits: int | None = None
    kv_granularity: str | None = None
    probs_bits: int | None = None
    transforms: tuple[tuple[str, tuple[tuple[str, Any], ...]], ...] = ()
    kv_keep_first: int = 0
    act_format: str = "int"

    def __post_init__(self):
        # normalise containers so equal specs hash and serialise equally
        object.__setattr__(self, "skip", tuple(self.skip))
        opts = self.options.items() if isinstance(self.options, dict) else self.options
        object.__setattr__(self, "options", tuple(sorted((str(k), v) for k, v in opts)))
        object.__setattr__(self, "transforms", normalise_transforms(self.transforms))
        if self.grid not in GRIDS:
            raise ValueError(f"unknown grid {self.grid!r}; valid: {list(GRIDS)}")
        if self.grid != "full" and (self.method == "none" or not self.symmetric):
            raise ValueError(f"grid {self.grid!r} needs a symmetric weight quantizer (method {self.method!r}, "
                             f"symmetric {self.symmetric})")

    @property
    def is_baseline(self) -> bool:
        return (
            self.method == "none"
            and self.act_bits is None
            and self.kv_bits is None
            and self.probs_bits is None
            and not self.transforms
        )

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skip"] = list(self.skip)
        d["options"] = dict(self.options)
        d["transforms"] = [{name: dict(opts)} for name, opts in self.transforms]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> QuantSpec:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown quant spec fields {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**d)

    def label(self) -> str:
        """Short human name, e.g. 'rtn-w4-g128-asym', 'none', 'rtn-w8+a8tok'."""
        if self.method == "none":
            parts = ["none"]
        else:
            parts = [f"{self.method}-w{self.bits}"]
            if self.group_size:
                parts.append(f"g{self.group_size}")
            if not self.symmetric:
                parts.append("asym")
            if self.grid != "full":
                parts.append(self.grid)
            parts += [f"{k}={v}" for k, v in self.options]
            if tuple(self.skip) != DEFAULT_SKIP:
                parts.append("skip=" + ",".join(self.skip) if self.skip else "skip=none")
        label = "-".join(parts)
        extras = []
        if self.act_bits:
            fmt = "" if self.act_format == "int" else f"{self.act_format}-"
            extras.append(f"{fmt}a{self.act_bits}{'tok' if self.act_granularity == 'per_token' else 'ten'}")
        if self.kv_bits:
            extras.append(f"kv{self.kv_bits}{'tok' if self.kv_granularity == 'per_token' else 'head'}")
        if self.kv_keep_first:
            extras.append(f"keep{self.kv_keep_first}")
        if self.probs_bits:
            extras.append(f"p{self.probs_bits}")
        if extras:
            label = ("" if self.method == "none" else label + "+") + "+".join(extras)
        if self.transforms:
            names = ",".join(name + "".join(f"-{k}={v}" for k, v in opts) for name, opts in self.transforms)
            label = names + ("" if label == "none" else "/" + label)
        return label


def normalise_transforms(raw) -> tuple:
    """Transforms as ((name, sorted option pairs), ...) from names, {name: {options}} or (name, options)."""
    if isinstance(raw, (str, dict)):
        raw = [raw]
    out = []
    for entry in raw or ():
        if isinstance(entry, str):
            name, opts = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            name, opts = next(iter(entry.items()))
        elif isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str):
            name, opts = entry
        else:
            raise UnsupportedQuantError(
                f"quant spec transforms entry {entry!r} must be a name or {{name: {{options}}}}, e.g. hadamard"
            )
        opts = opts.items() if isinstance(opts, dict) else (opts or ())
        out.append((str(name), tuple(sorted((str(k), v) for k, v in opts))))
    return tuple(out)


BASELINE = QuantSpec()


@dataclass
class QuantReport:
    """Proof that quantization happened, attached to every quantized cell."""

    method: str
    layers_quantized: int
    layers_total: int
    params_quantized: int
    mean_rel_weight_error: float | None
    effective_bits: float | None  # per quantized parameter, scales and zero points included
    skipped_layers: list[str] = field(default_factory=list)
    seconds: float = 0.0
    peak_memory_bytes: int | None = None
    details: dict = field(default_factory=dict)  # method-specific: activation error, kv error, ...

    def to_dict(self) -> dict:
        return asdict(self)
