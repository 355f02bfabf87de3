"""HQQ (half-quadratic quantization) through the `hqq` package's own API.

Every target nn.Linear becomes an hqq HQQLinear (packed weights, scale and zero per group,
dequantized on the fly). transformers' HqqConfig path is broken in 5.17, so it is not used.
HQQ's grid always has a zero point (asymmetric): a spec must say symmetric: false.
Embeddings have no HQQ module: when not skipped they are quantized-dequantized in place
with hqq's own Quantizer (same grid), recorded in the report.
"""

from __future__ import annotations

import time

from torch import nn

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.quant.base import QuantContext, WeightQuantizer, iter_targets, register, relative_error
from softpick_bench.quant.modules import library_report, replace_module
from softpick_bench.quant.spec import QuantReport, QuantSpec

try:  # optional dependency: without it the backend refuses every cell in check()
    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear, Quantizer

    IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    IMPORT_ERROR = exc

META_BITS = 16  # scale and zero are kept in 16 bits (quant_scale / quant_zero off)


@register
class HQQ(WeightQuantizer):
    name = "hqq"  # bits (no 7-bit packing) and options: quant/declared.py
    packages = ("hqq",)
    grids = ("full",)  # always asymmetric: no symmetric grid convention to choose
    supports_symmetric = False

    def check(self, spec: QuantSpec, device: str) -> None:
        if IMPORT_ERROR is not None:
            raise UnsupportedQuantError(f"hqq is not installed ({IMPORT_ERROR}); pip install hqq==0.2.8.post1")
        super().check(spec, device)
        if spec.symmetric:
            raise UnsupportedQuantError("hqq's grid always has a zero point: set symmetric: false")
        if spec.option("axis", 1) not in (0, 1):
            raise UnsupportedQuantError(f"hqq option axis must be 0 or 1, got {spec.option('axis')!r}")

    def apply(self, model: nn.Module, spec: QuantSpec, ctx: QuantContext) -> QuantReport:
        start = time.perf_counter()
        axis = int(spec.option("axis", 1))
        errors, numels, bits, embeddings = [], [], [], []
        for name, module in list(iter_targets(model, spec)):
            w = module.weight.data
            group = spec.group_size or (w.shape[1] if axis == 1 else w.shape[0])  # None: one group per channel
            if w.numel() % group:
                raise UnsupportedQuantError(f"hqq group size {group} does not divide {name}'s {w.numel()} weights")
            config = BaseQuantizeConfig(nbits=spec.bits, group_size=group, axis=axis)
            if isinstance(module, nn.Embedding):
                wq, meta = Quantizer.quantize(
                    w, device=str(w.device), compute_dtype=w.dtype, **config["weight_quant_params"]
                )
                deq = Quantizer.dequantize(wq, meta).reshape(w.shape).to(w.dtype)
                errors.append(relative_error(w, deq))
                w.copy_(deq)
                embeddings.append(name)
            else:
                original = w.clone()
                layer = HQQLinear(
                    module, quant_config=config, compute_dtype=w.dtype, device=str(w.device), del_orig=False
                )
                errors.append(relative_error(original, layer.dequantize().reshape(original.shape)))
                replace_module(model, name, layer)
            numels.append(w.numel())
            bits.append(spec.bits + 2 * META_BITS / group)
        return library_report(
            self.name,
            model,
            spec,
            ctx.device,
            start,
            errors,
            numels,
            bits,
            {"axis": axis, "fake_quantized_embeddings": embeddings},
        )
