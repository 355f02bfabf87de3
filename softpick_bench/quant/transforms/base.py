"""Model transforms run before any weight method (rotation, smoothing): one interface, one registry.

A transform changes the model so that its function is unchanged (up to rounding) but its
weights and activations quantize better. Each declares its options, checks a spec at plan
time (`check`, and `shape_problem` against the architecture), and `apply` returns what it
did for the QuantReport.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import nn

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.quant.spec import QuantSpec


class Transform(ABC):
    name: str = ""
    options: dict[str, str] = {}  # option name -> one-line description
    description: str = ""

    def check(self, opts: dict, spec: QuantSpec, device: str) -> None:
        unknown = set(opts) - set(self.options)
        if unknown:
            raise UnsupportedQuantError(
                f"transform {self.name} has no option(s) {sorted(unknown)}; valid: {sorted(self.options) or 'none'}"
            )

    def shape_problem(self, opts: dict, arch: dict) -> str | None:
        """Why this transform cannot fit the architecture (a transformers config dict), or None."""
        return None

    @abstractmethod
    def apply(self, model: nn.Module, opts: dict, spec: QuantSpec, ctx) -> dict:
        """Transform `model` in place; returns the report details."""


_TRANSFORMS: dict[str, Transform] = {}


def register_transform(cls: type[Transform]) -> type[Transform]:
    _TRANSFORMS[cls.name] = cls()
    return cls


def get_transform(name: str) -> Transform:
    from softpick_bench.quant.transforms import load_transforms

    load_transforms()
    if name not in _TRANSFORMS:
        raise UnsupportedQuantError(f"unknown transform {name!r}; valid: {', '.join(transform_names())}")
    return _TRANSFORMS[name]


def transform_names() -> list[str]:
    from softpick_bench.quant.transforms import load_transforms

    load_transforms()
    return sorted(_TRANSFORMS)
