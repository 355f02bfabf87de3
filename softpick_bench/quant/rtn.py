"""Round-to-nearest weight fake quantization: per output channel or per group, sym or asym."""

from __future__ import annotations

import time

import torch

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.quant.base import (
    QuantContext,
    WeightQuantizer,
    iter_targets,
    peak_memory,
    register,
    relative_error,
    skipped_names,
)
from softpick_bench.quant.spec import GRIDS, QuantReport, QuantSpec

SCALE_BITS = 16  # scales and zero points are counted as 16-bit values




def int_range(bits: int, symmetric: bool, grid: str = "full") -> tuple[int, int]:
    """Integer range (qmin, qmax) of the stored codes."""
    if symmetric and grid == "restricted":
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def scale_zero(
    x: torch.Tensor, bits: int, symmetric: bool, grid: str = "full"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and integer zero point of the grid over the last dimension of x (kept as size 1).

    Symmetric, full range (the field's convention: GPTQ's reference code, AutoGPTQ/GPTQModel,
    torchao): all 2^b codes, scale = 2 max|x| / (2^b - 1), zero point 2^(b-1), so the levels
    are k * scale for k in -2^(b-1)..2^(b-1)-1 (2 bits: {-4/3, -2/3, 0, 2/3} max|x|). Unlike
    the reference we use max|x| also for a slice with no negative value (the reference then
    keeps xmin = 0 and halves the scale, clipping the top of such a slice).
    Symmetric, restricted: scale = max|x| / (2^(b-1) - 1), zero 0, only 2^b - 1 codes used
    (2 bits: the ternary {-1, 0, 1} max|x|).
    Asymmetric: scale = (max - min) / (2^b - 1) with an integer zero point.
    """
    if grid not in GRIDS:
        raise UnsupportedQuantError(f"unknown grid {grid!r}; valid: {list(GRIDS)}")
    if symmetric:
        amax = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12)
        if grid == "restricted":
            return amax / (2 ** (bits - 1) - 1), torch.zeros_like(amax)
        return 2 * amax / (2**bits - 1), torch.full_like(amax, 2 ** (bits - 1))
    lo = x.amin(dim=-1, keepdim=True)
    hi = x.amax(dim=-1, keepdim=True)
    scale = (hi - lo).clamp_min(1e-12) / (2**bits - 1)
    return scale, torch.round(-lo / scale)


def quant_dequant(
    x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool, grid: str = "full"
) -> torch.Tensor:
    qmin, qmax = int_range(bits, symmetric, grid)
    return (torch.clamp(torch.round(x / scale) + zero, qmin, qmax) - zero) * scale


def fake_quantize(
    w: torch.Tensor, bits: int, group_size: int | None, symmetric: bool, grid: str = "full"
) -> torch.Tensor:
    """Quantize-dequantize a 2-D weight along its input dimension (rows = output channels).

    Computation in float32, result in w's dtype.
    """
    out_features, in_features = w.shape
    g = in_features if group_size is None else group_size
    if in_features % g:
        raise UnsupportedQuantError(f"group size {g} does not divide the input dimension {in_features}")
    x = w.float().reshape(out_features, in_features // g, g)
    scale, zero = scale_zero(x, bits, symmetric, grid)
    deq = quant_dequant(x, scale, zero, bits, symmetric, grid)
    return deq.reshape(out_features, in_features).to(w.dtype)


def effective_bits(bits: int, in_features: int, group_size: int | None, symmetric: bool) -> float:
    """Bits per weight including one scale (and zero point if asymmetric) per group.

    The full-range symmetric grid's zero point is the constant 2^(b-1): nothing stored."""
    g = in_features if group_size is None else group_size
    return bits + SCALE_BITS * (1 if symmetric else 2) / g


@register
class RTN(WeightQuantizer):
    name = "rtn"  # bits and options: quant/declared.py

    def apply(self, model, spec: QuantSpec, ctx: QuantContext) -> QuantReport:
        start = time.perf_counter()
        errors, weighted_bits, params, count = [], 0.0, 0, 0
        with torch.no_grad():
            for _, module in iter_targets(model, spec):
                w = module.weight
                q = fake_quantize(w.data, spec.bits, spec.group_size, spec.symmetric, spec.grid)
                errors.append(relative_error(w.data, q))
                w.data.copy_(q)
                n = w.numel()
                weighted_bits += n * effective_bits(spec.bits, w.shape[1], spec.group_size, spec.symmetric)
                params += n
                count += 1
        skipped = skipped_names(model, spec)
        return QuantReport(
            method=self.name,
            layers_quantized=count,
            layers_total=count + len(skipped),
            params_quantized=params,
            mean_rel_weight_error=sum(errors) / len(errors) if errors else None,
            effective_bits=weighted_bits / params if params else None,
            skipped_layers=skipped,
            seconds=time.perf_counter() - start,
            peak_memory_bytes=peak_memory(ctx.device),
        )
