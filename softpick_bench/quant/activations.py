"""Activation fake quantization: the input of every quantized linear layer goes through an integer grid.

Symmetric grid (no zero point), the form int8/int4 GEMMs consume:
- per_token (dynamic): one scale per token, max|x| over the features / qmax, computed on the fly;
- per_tensor (static): one scale for the layer, fixed after a calibration pass: the clipping
  threshold (a fraction of the max|x| seen) that minimises the squared quantization error on a
  subsample of the calibration inputs (the usual MSE calibration: a plain min-max scale wastes
  most levels on rare outliers); inputs beyond it are clipped, as a static-scale kernel would.
The wrapper also measures its own relative input error while `recording` is on, so a
report can prove the quantization changed something.

Grid convention: unlike weights (QuantSpec.grid, default the full 2^b-level grid), activations
keep scale = max|x| / (2^(b-1) - 1) with codes clamped to [-2^(b-1), 2^(b-1) - 1]: the form
the field's activation quantizers use (SmoothQuant and QuaRot per-token absmax, torchao's int8
dynamic activations), so that a token's max is represented exactly; the extra negative code
is reached only by clipping under a static scale. KV (attention_quant.py) is asymmetric, with
all 2^b levels, and the attention probabilities' grid is unsigned: neither has the choice.
"""

from __future__ import annotations

import torch
from torch import nn

ACT_GRANULARITIES = ("per_token", "per_tensor")


def fake_quantize_symmetric(x: torch.Tensor, bits: int, scale: torch.Tensor) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    return (torch.clamp(torch.round(x / scale), -qmax - 1, qmax) * scale).to(x.dtype)


SAMPLE_PER_CALL = 4096  # bulk values kept per calibration call: a strided, deterministic subsample...
TAIL_PER_CALL = 256  # ...plus the largest magnitudes exactly, since the clip is decided in the tail
CLIP_RATIOS = tuple(r / 100 for r in range(100, 29, -2))  # candidate thresholds, fractions of max|x|


def mse_optimal_scale(samples: torch.Tensor, weights: torch.Tensor, amax: float, bits: int) -> float:
    """The scale (clip / qmax) minimising the weighted fake-quantization error of `samples` over CLIP_RATIOS."""
    qmax = 2 ** (bits - 1) - 1
    best_scale, best_err = amax / qmax, float("inf")
    for ratio in CLIP_RATIOS:
        scale = max(amax * ratio, 1e-12) / qmax
        diff = fake_quantize_symmetric(samples, bits, torch.tensor(scale)) - samples
        err = float((weights * diff.pow(2)).sum())
        if err < best_err:
            best_scale, best_err = scale, err
    return best_scale


def per_token_scale(x: torch.Tensor, bits: int) -> torch.Tensor:
    return x.detach().abs().amax(dim=-1, keepdim=True).float().clamp_min(1e-12) / (2 ** (bits - 1) - 1)


class ErrorMeter:
    """Accumulates ||quantized - original||^2 and ||original||^2 while switched on."""

    def __init__(self):
        self.recording = False
        self.err = 0.0
        self.ref = 0.0

    def add(self, original: torch.Tensor, quantized: torch.Tensor) -> None:
        if self.recording:
            self.err += float((quantized.float() - original.float()).pow(2).sum())
            self.ref += float(original.float().pow(2).sum())

    def relative(self) -> float | None:
        return (self.err / self.ref) ** 0.5 if self.ref > 0 else None


class ActQuantLinear(nn.Module):
    """Wraps a linear-like module (nn.Linear, bnb, HQQ) and fake-quantizes its input."""

    def __init__(self, inner: nn.Module, bits: int, granularity: str):
        super().__init__()
        if granularity not in ACT_GRANULARITIES:
            raise ValueError(f"activation granularity {granularity!r}; valid: {ACT_GRANULARITIES}")
        self.inner = inner
        self.bits = bits
        self.granularity = granularity
        self.observing = False  # per_tensor calibration: track inputs without quantizing
        self.register_buffer("static_amax", torch.zeros(()), persistent=True)
        self._samples: list[tuple[torch.Tensor, torch.Tensor]] = []  # (|x| values, how many each stands for)
        self._static_scales: dict[int, float] = {}  # bits -> calibrated scale
        self.meter = ErrorMeter()

    def _observe(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1).float().abs().cpu()
        stride = max(1, flat.numel() // SAMPLE_PER_CALL)
        bulk = flat[::stride]
        tail = flat.topk(min(TAIL_PER_CALL, flat.numel())).values
        self._samples.append((torch.cat([bulk, tail]), torch.cat([torch.full_like(bulk, stride), torch.ones_like(tail)])))
        self.static_amax = torch.maximum(self.static_amax, flat.abs().amax().to(self.static_amax.device))
        self._static_scales.clear()

    def static_scale(self, bits: int) -> float:
        if float(self.static_amax) <= 0:
            raise RuntimeError("per_tensor activation quantization used before calibration")
        if bits not in self._static_scales:
            values, weights = (torch.cat(parts) for parts in zip(*self._samples))
            self._static_scales[bits] = mse_optimal_scale(values, weights, float(self.static_amax), bits)
        return self._static_scales[bits]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self._observe(x)
            return self.inner(x)
        if self.granularity == "per_token":
            scale = per_token_scale(x, self.bits)
        else:
            scale = torch.tensor(self.static_scale(self.bits), device=x.device)
        xq = fake_quantize_symmetric(x, self.bits, scale)
        self.meter.add(x, xq)
        return self.inner(xq)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, granularity={self.granularity}"
