"""Floating-point number formats as fake quantization: FP8 (e4m3, e5m2), FP4 e2m1, MXFP4 and NVFP4.

FP8 uses torch's own dtypes: a cast float32 -> float8_e4m3fn / float8_e5m2 rounds to the
nearest representable value, ties to even, on CPU and GPU alike; values are clamped to the
format's largest finite value first (e4m3fn has no infinity, so an overflowing cast would
otherwise be NaN).

FP4 e2m1 (values ±{0, 0.5, 1, 1.5, 2, 3, 4, 6}) is written here: torch has a packed
float4_e2m1fn_x2 storage dtype but no cast into it, and torchao's MX/NVFP4 code lives in
`torchao.prototype` (an unstable API) with compiled extensions that do not load against
torch 2.13.0+cpu; fake quantization only needs the value set, which is a lookup.

Block formats (OCP Microscaling v1.0 and NVIDIA's NVFP4), over the last dimension:
- MXFP4: blocks of 32 share a power-of-two (E8M0) scale 2^(floor(log2 amax) - 2), 2 being
  e2m1's largest exponent; elements beyond 6 x scale saturate to ±6 (as the spec does).
- NVFP4: blocks of 16 share an FP8 e4m3 scale amax_block / 6, expressed relative to one
  float32 per-tensor scale amax_tensor / (6 * 448) so every block scale fits e4m3's range.
"""

from __future__ import annotations

import torch

FP8_DTYPES = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # codes 0..7 (sign apart)
E2M1_MAX = 6.0
E2M1_EMAX = 2  # exponent of e2m1's largest power of two (4 = 2^2)
MX_BLOCK = 32
NV_BLOCK = 16
E8M0_RANGE = (-127, 127)


def fp8_max(fmt: str) -> float:
    return float(torch.finfo(FP8_DTYPES[fmt]).max)


def round_fp8(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """x (already scaled) rounded to the nearest FP8 value of `fmt`, saturating; float32 result."""
    m = fp8_max(fmt)
    return x.float().clamp(-m, m).to(FP8_DTYPES[fmt]).float()


def round_e2m1(x: torch.Tensor) -> torch.Tensor:
    """x (already scaled) rounded to the nearest e2m1 value, ties to the even code, saturating at ±6."""
    grid = torch.tensor(E2M1_VALUES, device=x.device)
    a = x.float().abs().clamp(max=E2M1_MAX)
    dist = (a.unsqueeze(-1) - grid).abs()
    nearest = dist == dist.amin(dim=-1, keepdim=True)
    preference = nearest * (2 - torch.arange(len(E2M1_VALUES), device=x.device) % 2)  # even code wins a tie
    return torch.sign(x.float()) * grid[preference.argmax(dim=-1)]


def fake_quantize_fp8(x: torch.Tensor, fmt: str, scale: torch.Tensor) -> torch.Tensor:
    """Quantize-dequantize x / scale on the FP8 grid; result in x's dtype."""
    return (round_fp8(x.float() / scale, fmt) * scale).to(x.dtype)


def fp8_scale(x: torch.Tensor, fmt: str, dim: int = -1) -> torch.Tensor:
    """Max-abs scale mapping each slice's largest magnitude to the format's largest value."""
    return x.detach().float().abs().amax(dim=dim, keepdim=True).clamp_min(1e-12) / fp8_max(fmt)


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    if x.shape[-1] % block:
        raise ValueError(f"block size {block} does not divide the last dimension {x.shape[-1]}")
    return x.float().reshape(*x.shape[:-1], x.shape[-1] // block, block)


def fake_quantize_mxfp4(x: torch.Tensor) -> torch.Tensor:
    """MXFP4: blocks of 32 along the last dimension, E8M0 scale, e2m1 elements; result in x's dtype."""
    xb = _blocks(x, MX_BLOCK)
    amax = xb.abs().amax(dim=-1, keepdim=True)
    exponent = torch.floor(torch.log2(amax.clamp_min(2.0**-126))) - E2M1_EMAX
    scale = torch.exp2(exponent.clamp(*E8M0_RANGE))
    out = round_e2m1(xb / scale) * scale
    return out.reshape(x.shape).to(x.dtype)


def nvfp4_tensor_scale(amax: torch.Tensor | float) -> torch.Tensor:
    """The float32 per-tensor scale: the block scales (amax_block / 6) then fit e4m3's range."""
    return torch.as_tensor(amax, dtype=torch.float32).clamp_min(1e-30) / (E2M1_MAX * fp8_max("e4m3"))


def fake_quantize_nvfp4(x: torch.Tensor, tensor_scale: torch.Tensor | None = None) -> torch.Tensor:
    """NVFP4: blocks of 16, e4m3 block scales times a float32 per-tensor scale, e2m1 elements.

    tensor_scale: per-tensor scale (broadcastable to x without its last dim, e.g. one per
    token); default: from x's own max |x|. Inputs beyond 448 x 6 x tensor_scale saturate.
    """
    if tensor_scale is None:
        tensor_scale = nvfp4_tensor_scale(x.detach().float().abs().amax())
    ts = torch.as_tensor(tensor_scale, dtype=torch.float32, device=x.device)
    ts = ts.reshape(*ts.shape, 1) if ts.dim() else ts  # one value per block row
    xb = _blocks(x, NV_BLOCK)
    block_scale = round_fp8(xb.abs().amax(dim=-1, keepdim=True) / E2M1_MAX / ts, "e4m3") * ts
    safe = torch.where(block_scale > 0, block_scale, torch.ones_like(block_scale))
    out = torch.where(block_scale > 0, round_e2m1(xb / safe) * block_scale, torch.zeros_like(xb))
    return out.reshape(x.shape).to(x.dtype)
