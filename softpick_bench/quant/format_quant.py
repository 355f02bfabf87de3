"""The floating-point formats of formats.py as weight methods and as activation formats.

Weight methods (fake quantization of every target linear layer, like rtn):
- `fp8` (bits 8, option `format`: e4m3 | e5m2): one max-abs scale per output channel, or
  per group of `group_size` inputs;
- `mxfp4` (bits 4): MXFP4 blocks of 32 inputs (group_size null or 32);
- `nvfp4` (bits 4): NVFP4 blocks of 16 inputs (group_size null or 16), one per-tensor scale.
Activation formats (spec.act_format, applied to every quantized linear layer's input):
- `fp8_e4m3`, `fp8_e5m2` (act_bits 8): per_token dynamic max-abs scale, or per_tensor static
  scale from the calibrated max |x| (no clipping search: FP8's range is meant to hold it);
- `mxfp4` (act_bits 4, per_token): block scales within each token, dynamic;
- `nvfp4` (act_bits 4): block scales dynamic; the per-tensor scale per token (per_token) or
  calibrated once for the layer (per_tensor).
"""

from __future__ import annotations

from abc import abstractmethod

import time

import torch

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.quant import formats
from softpick_bench.quant.activations import ActQuantLinear
from softpick_bench.quant.base import QuantContext, WeightQuantizer, iter_targets, register, relative_error
from softpick_bench.quant.modules import library_report
from softpick_bench.quant.spec import QuantReport, QuantSpec

SCALE_BITS = 16  # a per-channel/group FP8 scale is counted as 16 bits, as rtn counts its scales
ACT_FORMATS = {"int": None, "fp8_e4m3": 8, "fp8_e5m2": 8, "mxfp4": 4, "nvfp4": 4}  # format -> act_bits it needs
ACT_FORMAT_GRANULARITIES = {"mxfp4": ("per_token",)}  # others take per_token and per_tensor


def check_act_format(spec: QuantSpec) -> None:
    fmt = spec.act_format
    if fmt not in ACT_FORMATS:
        raise UnsupportedQuantError(f"unknown act_format {fmt!r}; valid: {sorted(ACT_FORMATS)}")
    if fmt == "int":
        return
    if spec.act_bits != ACT_FORMATS[fmt]:
        raise UnsupportedQuantError(f"act_format {fmt!r} needs act_bits {ACT_FORMATS[fmt]} (got {spec.act_bits})")
    valid = ACT_FORMAT_GRANULARITIES.get(fmt, ("per_token", "per_tensor"))
    if spec.act_granularity not in valid:
        raise UnsupportedQuantError(
            f"act_format {fmt!r} takes act_granularity {list(valid)} (got {spec.act_granularity!r})"
        )


BLOCKS = {"mxfp4": formats.MX_BLOCK, "nvfp4": formats.NV_BLOCK}


def format_shape_problem(spec: QuantSpec, arch: dict) -> str | None:
    """Why a block format (weights or activations) cannot fit this architecture's widths, or None."""
    head_dim = arch.get("head_dim") or arch["hidden_size"] // arch["num_attention_heads"]
    widths = {
        "hidden_size": arch["hidden_size"],
        "intermediate_size": arch["intermediate_size"],
        "attention width (heads x head_dim)": arch["num_attention_heads"] * head_dim,
    }
    for fmt in {spec.method, spec.act_format} & set(BLOCKS):
        for name, width in widths.items():
            if width % BLOCKS[fmt]:
                return f"{fmt} blocks of {BLOCKS[fmt]} do not divide the {name} {width} of this model"
    return None


def fake_quantize_activation(x: torch.Tensor, fmt: str, granularity: str, static_amax: torch.Tensor) -> torch.Tensor:
    if fmt in ("fp8_e4m3", "fp8_e5m2"):
        kind = fmt.removeprefix("fp8_")
        if granularity == "per_token":
            scale = formats.fp8_scale(x, kind)
        else:
            scale = static_amax.float().clamp_min(1e-12) / formats.fp8_max(kind)
        return formats.fake_quantize_fp8(x, kind, scale)
    if fmt == "mxfp4":
        return formats.fake_quantize_mxfp4(x)
    if fmt == "nvfp4":
        amax = x.detach().float().abs().amax(dim=-1, keepdim=True) if granularity == "per_token" else static_amax
        return formats.fake_quantize_nvfp4(x, formats.nvfp4_tensor_scale(amax))
    raise ValueError(f"unknown activation format {fmt!r}")


class FormatActQuantLinear(ActQuantLinear):
    """ActQuantLinear with a floating-point activation format instead of the integer grid."""

    def __init__(self, inner, bits: int, granularity: str, fmt: str):
        super().__init__(inner, bits, granularity)
        self.fmt = fmt

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self._observe(x)
            return self.inner(x)
        if self.granularity == "per_tensor" and float(self.static_amax) <= 0:
            raise RuntimeError("per_tensor activation quantization used before calibration")
        xq = fake_quantize_activation(x, self.fmt, self.granularity, self.static_amax)
        self.meter.add(x, xq)
        return self.inner(xq)

    def extra_repr(self) -> str:
        return f"format={self.fmt}, granularity={self.granularity}"


class _FormatWeights(WeightQuantizer):
    """Shared apply: fake-quantize each target weight with `quantize` and count its bits."""

    supports_asymmetric = False  # sign-magnitude formats: no zero point
    grids = ("full",)  # floating-point formats: no integer grid convention to choose

    @abstractmethod
    def quantize(self, w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
        """The fake-quantized weight, same shape and dtype."""

    @abstractmethod
    def bits_per_weight(self, w: torch.Tensor, spec: QuantSpec) -> float:
        """Stored bits per weight, scales included."""

    def apply(self, model, spec: QuantSpec, ctx: QuantContext) -> QuantReport:
        start = time.perf_counter()
        errors, numels, bits = [], [], []
        with torch.no_grad():
            for name, module in iter_targets(model, spec):
                w = module.weight
                if w.dim() != 2:
                    raise UnsupportedQuantError(f"{self.name}: {name} weight is not 2-D ({tuple(w.shape)})")
                q = self.quantize(w.data, spec)
                errors.append(relative_error(w.data, q))
                w.data.copy_(q)
                numels.append(w.numel())
                bits.append(self.bits_per_weight(w, spec))
        details = {"format": self.format_name(spec)}
        return library_report(self.name, model, spec, ctx.device, start, errors, numels, bits, details)

    def format_name(self, spec: QuantSpec) -> str:
        return self.name


def _check_block(name: str, spec: QuantSpec, block: int) -> None:
    if spec.group_size not in (None, block):
        raise UnsupportedQuantError(
            f"{name} blocks are {block} weights by definition (group_size null or {block}, got {spec.group_size})"
        )


@register
class FP8(_FormatWeights):
    name = "fp8"  # bits and options: quant/declared.py

    def check(self, spec: QuantSpec, device: str) -> None:
        super().check(spec, device)
        fmt = spec.option("format", "e4m3")
        if fmt not in formats.FP8_DTYPES:
            raise UnsupportedQuantError(f"fp8 format {fmt!r} unknown; valid: {sorted(formats.FP8_DTYPES)}")

    def format_name(self, spec: QuantSpec) -> str:
        return f"fp8_{spec.option('format', 'e4m3')}"

    def quantize(self, w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
        fmt = spec.option("format", "e4m3")
        out_f, in_f = w.shape
        g = spec.group_size or in_f
        if in_f % g:
            raise UnsupportedQuantError(f"group size {g} does not divide the input dimension {in_f}")
        x = w.float().reshape(out_f, in_f // g, g)
        return formats.fake_quantize_fp8(x, fmt, formats.fp8_scale(x, fmt)).reshape(w.shape).to(w.dtype)

    def bits_per_weight(self, w, spec) -> float:
        return 8 + SCALE_BITS / (spec.group_size or w.shape[1])


@register
class MXFP4(_FormatWeights):
    name = "mxfp4"  # bits: quant/declared.py

    def check(self, spec: QuantSpec, device: str) -> None:
        super().check(spec, device)
        _check_block(self.name, spec, formats.MX_BLOCK)

    def quantize(self, w, spec):
        return formats.fake_quantize_mxfp4(w)

    def bits_per_weight(self, w, spec) -> float:
        return 4 + 8 / formats.MX_BLOCK  # one E8M0 byte per block


@register
class NVFP4(_FormatWeights):
    name = "nvfp4"  # bits: quant/declared.py

    def check(self, spec: QuantSpec, device: str) -> None:
        super().check(spec, device)
        _check_block(self.name, spec, formats.NV_BLOCK)

    def quantize(self, w, spec):
        return formats.fake_quantize_nvfp4(w)

    def bits_per_weight(self, w, spec) -> float:
        return 4 + 8 / formats.NV_BLOCK + 32 / w.numel()  # e4m3 per block, fp32 per tensor
