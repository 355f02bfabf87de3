"""Apply a whole quant spec to a model: weights first, then the activation-side transforms.

Everything a spec asks for is either done and proven in the report, or refused with
UnsupportedQuantError before any work; a quantizer that changed nothing is an error.
"""

from __future__ import annotations

from torch import nn

from softpick_bench.errors import QuantizationNoOpError, UnsupportedQuantError
from softpick_bench.quant.base import QuantContext, get_backend
from softpick_bench.quant.spec import QuantReport, QuantSpec


def check_spec(spec: QuantSpec, device: str) -> None:
    """Raise UnsupportedQuantError if any part of `spec` cannot run on `device`."""
    if spec.method != "none":
        get_backend(spec.method).check(spec, device)
    if spec.act_bits is not None or spec.kv_bits is not None or spec.probs_bits is not None:
        raise UnsupportedQuantError("activation, KV-cache and attention-probability quantization are not built yet")


def quantize(model: nn.Module, spec: QuantSpec, ctx: QuantContext) -> QuantReport:
    """Quantize `model` in place (give it a copy) and return the proof."""
    check_spec(spec, ctx.device)
    if spec.method == "none":
        raise QuantizationNoOpError(f"quant spec {spec.label()} asks for nothing to be quantized")
    report = get_backend(spec.method).apply(model, spec, ctx)
    if report.layers_quantized == 0:
        raise QuantizationNoOpError(
            f"{spec.label()}: no layer was quantized (skip={list(spec.skip)} left nothing to quantize)"
        )
    if report.mean_rel_weight_error is not None and report.mean_rel_weight_error == 0.0:
        raise QuantizationNoOpError(f"{spec.label()}: quantization left every weight unchanged")
    return report
