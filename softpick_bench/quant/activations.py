"""Activation fake quantization: the input of every quantized linear layer goes through an integer grid.

Symmetric grid (no zero point), the form int8/int4 GEMMs consume:
- per_token (dynamic): one scale per token, max|x| over the features / qmax, computed on the fly;
- per_tensor (static): one scale for the layer, max|x| seen over a calibration pass / qmax;
  inputs beyond it are clipped, as a static-scale kernel would.
The wrapper also measures its own relative input error while `recording` is on, so a
report can prove the quantization changed something.
"""

from __future__ import annotations

import torch
from torch import nn

ACT_GRANULARITIES = ("per_token", "per_tensor")


def fake_quantize_symmetric(x: torch.Tensor, bits: int, scale: torch.Tensor) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    return (torch.clamp(torch.round(x / scale), -qmax - 1, qmax) * scale).to(x.dtype)


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
        self.observing = False  # per_tensor calibration: track max|x| without quantizing
        self.register_buffer("static_amax", torch.zeros(()), persistent=True)
        self.meter = ErrorMeter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.static_amax = torch.maximum(
                self.static_amax, x.detach().abs().amax().float().to(self.static_amax.device)
            )
            return self.inner(x)
        if self.granularity == "per_token":
            scale = per_token_scale(x, self.bits)
        else:
            if float(self.static_amax) <= 0:
                raise RuntimeError("per_tensor activation quantization used before calibration")
            scale = self.static_amax.clamp_min(1e-12) / (2 ** (self.bits - 1) - 1)
        xq = fake_quantize_symmetric(x, self.bits, scale)
        self.meter.add(x, xq)
        return self.inner(xq)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, granularity={self.granularity}"
