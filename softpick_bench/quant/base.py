"""One interface for every quantizer, and the registry the config and the plan consult.

A backend declares what it supports (bits, devices, whether it needs calibration data)
so the plan can list impossible cells as skipped, with the reason, before any work;
`apply` quantizes a model copy in place and returns the QuantReport proving it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.quant import declared
from softpick_bench.quant.spec import GRIDS, QuantReport, QuantSpec


@dataclass
class QuantContext:
    """What a backend may need beyond the model: calibration text, tokenizer, device, seed."""

    tokenizer: object = None
    device: str = "cpu"
    seed: int = 0
    calibration: Callable[[], torch.Tensor] | None = None  # () -> LongTensor (n_seq, seq_len)
    info: dict = field(default_factory=dict)  # what was used (calibration source, count), recorded


class WeightQuantizer(ABC):
    """Base class: subclasses set the class attributes and implement `apply`."""

    name: str = ""
    bits: frozenset[int] = frozenset()  # a declared method's come from quant/declared.py (register sets them)
    devices: frozenset[str] = frozenset({"cpu", "cuda"})
    needs_calibration: bool = False
    options: dict[str, str] = {}  # option name -> one-line description (likewise)
    supports_group_size: bool = True
    supports_asymmetric: bool = True
    supports_symmetric: bool = True
    grids: tuple[str, ...] = GRIDS  # symmetric grid conventions it honours (QuantSpec.grid)
    packages: tuple[str, ...] = ()  # distributions whose version can change results (cache key)

    def check(self, spec: QuantSpec, device: str) -> None:
        """Raise UnsupportedQuantError if this backend cannot run `spec` on `device`."""
        if spec.bits not in self.bits:
            raise UnsupportedQuantError(f"{self.name} has no {spec.bits}-bit mode; supported bits: {sorted(self.bits)}")
        dev = device.split(":")[0]
        if dev not in self.devices:
            raise UnsupportedQuantError(f"{self.name} does not run on {dev}; supported: {sorted(self.devices)}")
        if spec.group_size is not None and not self.supports_group_size:
            raise UnsupportedQuantError(f"{self.name} has no group size setting (got {spec.group_size})")
        if not spec.symmetric and not self.supports_asymmetric:
            raise UnsupportedQuantError(f"{self.name} has no asymmetric mode")
        if spec.grid not in self.grids:
            raise UnsupportedQuantError(
                f"{self.name} has no {spec.grid!r} grid (it uses its own formats); valid: {list(self.grids)}"
            )
        unknown = {k for k, _ in spec.options} - set(self.options)
        if unknown:
            raise UnsupportedQuantError(
                f"{self.name} has no option(s) {sorted(unknown)}; valid: {sorted(self.options) or 'none'}"
            )

    @abstractmethod
    def apply(self, model: nn.Module, spec: QuantSpec, ctx: QuantContext) -> QuantReport:
        """Quantize `model` in place and return the proof; `check` has passed."""


_REGISTRY: dict[str, WeightQuantizer] = {}


def register(cls: type[WeightQuantizer]) -> type[WeightQuantizer]:
    """Class decorator: make a backend available under its `name`.

    A method declared in quant/declared.py takes its `bits` and `options` from there (the class must not
    set them); any other (a backend of one's own) is declared here from its class attributes.
    """
    decl = declared.METHODS.get(cls.name)
    if decl is None:
        decl = declared.declare(cls.name, cls.bits, cls.options)
    else:
        own = sorted({"bits", "options"} & set(vars(cls)))
        if own:
            raise TypeError(f"{cls.__name__} sets {own}; method {cls.name!r} declares them in quant/declared.py")
    cls.bits, cls.options = decl.bits, decl.options
    _REGISTRY[cls.name] = cls()
    return cls


def get_backend(name: str) -> WeightQuantizer:
    from softpick_bench.quant import load_backends

    load_backends()
    if name not in _REGISTRY:
        raise UnsupportedQuantError(f"unknown quantization method {name!r}; valid: {', '.join(methods())}")
    return _REGISTRY[name]


def methods() -> list[str]:
    from softpick_bench.quant import load_backends

    load_backends()
    return ["none", *sorted(_REGISTRY)]


def is_skipped(name: str, skip: tuple[str, ...]) -> bool:
    parts = name.split(".")
    return any(s in parts for s in skip)


def skipped_names(model: nn.Module, spec: QuantSpec) -> list[str]:
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.Embedding)) and is_skipped(name, spec.skip)
    ]


def iter_targets(model: nn.Module, spec: QuantSpec) -> Iterator[tuple[str, nn.Module]]:
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)) and not is_skipped(name, spec.skip):
            yield name, module


def relative_error(original: torch.Tensor, quantized: torch.Tensor) -> float:
    ref = original.float()
    return float((quantized.float() - ref).norm() / ref.norm().clamp_min(1e-30))


def peak_memory(device: str) -> int | None:
    """CUDA: peak allocated bytes since the last reset (apply.quantize resets it per cell).
    CPU: the process's peak resident set size (Linux), an upper bound for the cell."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except (ImportError, OSError):  # pragma: no cover - non-Unix
        return None
