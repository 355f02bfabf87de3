"""bitsandbytes: 4-bit NF4/FP4 (Linear4bit) and 8-bit LLM.int8 (Linear8bitLt), the real modules.

bits 4: options quant_type ("nf4" | "fp4"), blocksize (64), double_quant (true: the fp32
absmax of each block is itself quantized to 8 bits in blocks of 256).
bits 8: option threshold (6.0: input columns with an outlier above it run in 16 bits;
0.0: every column in int8). Both modes run on CPU (x86 AVX2) and CUDA with bitsandbytes 0.50.
Embeddings have no bitsandbytes module: when not skipped they are quantized-dequantized in
place with the library's functional quantizer of the same format, recorded in the report.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.quant.base import QuantContext, WeightQuantizer, iter_targets, register, relative_error
from softpick_bench.quant.declared import BNB_BLOCKSIZES as BLOCKSIZES, BNB_QUANT_TYPES as QUANT_TYPES
from softpick_bench.quant.modules import library_report, replace_module
from softpick_bench.quant.spec import QuantReport, QuantSpec

try:  # optional dependency: without it the backend refuses every cell in check()
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf

    IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    IMPORT_ERROR = exc

OPTIONS_4BIT = {"quant_type", "blocksize", "double_quant"}
OPTIONS_8BIT = {"threshold"}


def bits_4bit(blocksize: int, double_quant: bool) -> float:
    """Bits per weight: 4 + absmax per block (fp32, or 8-bit plus an fp32 per 256 blocks when nested)."""
    if double_quant:
        return 4 + 8 / blocksize + 32 / (blocksize * 256)
    return 4 + 32 / blocksize


def _dequantize_int8(layer) -> torch.Tensor:
    """Int8 row-wise weights times the per-row absmax (SCB) / 127."""
    return layer.weight.data.float() * layer.weight.SCB.float()[:, None] / 127.0


@register
class BNB(WeightQuantizer):
    name = "bnb"  # bits and options: quant/declared.py
    supports_group_size = False  # blocksize is the 4-bit group; int8 is per row
    supports_asymmetric = False  # absmax formats, no zero point
    grids = ("full",)  # nf4/fp4/int8 are bitsandbytes' own formats: no grid convention to choose
    packages = ("bitsandbytes",)

    def check(self, spec: QuantSpec, device: str) -> None:
        if IMPORT_ERROR is not None:
            raise UnsupportedQuantError(
                f"bitsandbytes is not installed ({IMPORT_ERROR}); pip install bitsandbytes==0.50.2"
            )
        super().check(spec, device)
        given = {k for k, _ in spec.options}
        wrong = given - (OPTIONS_4BIT if spec.bits == 4 else OPTIONS_8BIT)
        if wrong:
            raise UnsupportedQuantError(f"bnb {spec.bits}-bit has no option(s) {sorted(wrong)}")
        if spec.bits == 4:
            if spec.option("quant_type", "nf4") not in QUANT_TYPES:
                raise UnsupportedQuantError(
                    f"bnb quant_type must be one of {QUANT_TYPES}, got {spec.option('quant_type')!r}"
                )
            if spec.option("blocksize", 64) not in BLOCKSIZES:
                raise UnsupportedQuantError(
                    f"bnb blocksize must be one of {BLOCKSIZES}, got {spec.option('blocksize')!r}"
                )
        elif not isinstance(spec.option("threshold", 6.0), (int, float)) or spec.option("threshold", 6.0) < 0:
            raise UnsupportedQuantError(f"bnb threshold must be a number >= 0, got {spec.option('threshold')!r}")

    def apply(self, model: nn.Module, spec: QuantSpec, ctx: QuantContext) -> QuantReport:
        start = time.perf_counter()
        errors, numels, bits, embeddings = [], [], [], []
        quant_type = spec.option("quant_type", "nf4")
        blocksize = int(spec.option("blocksize", 64))
        double_quant = bool(spec.option("double_quant", False))
        threshold = float(spec.option("threshold", 6.0))
        for name, module in list(iter_targets(model, spec)):
            w = module.weight.data
            device = w.device
            if isinstance(module, nn.Embedding):
                if spec.bits == 4:
                    packed, state = bnbf.quantize_4bit(
                        w, blocksize=blocksize, quant_type=quant_type, compress_statistics=double_quant
                    )
                    deq = bnbf.dequantize_4bit(packed, state).to(w.dtype)
                else:
                    scale = w.float().abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
                    deq = (torch.round(w.float() / scale) * scale).to(w.dtype)  # LLM.int8's row-wise grid
                errors.append(relative_error(w, deq))
                w.copy_(deq)
                embeddings.append(name)
                per_weight = bits_4bit(blocksize, double_quant) if spec.bits == 4 else 8 + 32 / w.shape[1]
            elif spec.bits == 4:
                layer = bnb.nn.Linear4bit(
                    module.in_features,
                    module.out_features,
                    bias=module.bias is not None,
                    compute_dtype=w.dtype,
                    compress_statistics=double_quant,
                    quant_type=quant_type,
                    device="meta",
                )
                layer.weight = bnb.nn.Params4bit(
                    w.detach().cpu().clone(),
                    requires_grad=False,
                    quant_type=quant_type,
                    blocksize=blocksize,
                    compress_statistics=double_quant,
                )
                if module.bias is not None:
                    layer.bias = nn.Parameter(module.bias.data.clone(), requires_grad=False)
                layer = layer.to(device)  # moving the Params4bit is what quantizes it
                deq = bnbf.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
                errors.append(relative_error(w, deq))
                replace_module(model, name, layer)
                per_weight = bits_4bit(blocksize, double_quant)
            else:
                layer = bnb.nn.Linear8bitLt(
                    module.in_features,
                    module.out_features,
                    bias=module.bias is not None,
                    has_fp16_weights=False,
                    threshold=threshold,
                    device="meta",
                )
                layer.weight = bnb.nn.Int8Params(w.detach().cpu().clone(), requires_grad=False, has_fp16_weights=False)
                if module.bias is not None:
                    layer.bias = nn.Parameter(module.bias.data.clone(), requires_grad=False)
                layer = layer.to(device)  # moving the Int8Params is what quantizes it
                errors.append(relative_error(w, _dequantize_int8(layer)))
                replace_module(model, name, layer)
                per_weight = 8 + 32 / module.in_features  # fp32 absmax per row
            numels.append(w.numel())
            bits.append(per_weight)
        details = (
            {"quant_type": quant_type, "blocksize": blocksize, "double_quant": double_quant}
            if spec.bits == 4
            else {"threshold": threshold}
        )
        details["fake_quantized_embeddings"] = embeddings
        return library_report(self.name, model, spec, ctx.device, start, errors, numels, bits, details)
