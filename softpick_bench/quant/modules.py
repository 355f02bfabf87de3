"""Module surgery shared by the library backends: swap a named submodule, summarise the swap."""

from __future__ import annotations

import time

from torch import nn

from softpick_bench.quant.base import peak_memory, skipped_names
from softpick_bench.quant.spec import QuantReport, QuantSpec


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def library_report(
    method: str,
    model: nn.Module,
    spec: QuantSpec,
    device: str,
    start: float,
    errors: list[float],
    numels: list[int],
    bits_per_weight: list[float],
    details: dict,
) -> QuantReport:
    """QuantReport for a backend that replaced layers with a library's modules (one entry per layer)."""
    skipped = skipped_names(model, spec)
    params = sum(numels)
    return QuantReport(
        method=method,
        layers_quantized=len(numels),
        layers_total=len(numels) + len(skipped),
        params_quantized=params,
        mean_rel_weight_error=sum(errors) / len(errors) if errors else None,
        effective_bits=sum(n * b for n, b in zip(numels, bits_per_weight)) / params if params else None,
        skipped_layers=skipped,
        seconds=time.perf_counter() - start,
        peak_memory_bytes=peak_memory(device),
        details=details,
    )
