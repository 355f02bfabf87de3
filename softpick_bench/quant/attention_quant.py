"""Quantizers that act inside attention: the KV cache and the attention probabilities.

Both are installed as models.attention.AttentionHooks, so they run in the attention path
of every kind, whatever kernel computes it (the KV hook acts before kernels.dispatch).

KV: keys and values (B, Hkv, K, D) go through an asymmetric grid (scale and zero point:
keys carry per-channel offsets that a symmetric grid would waste levels on).
- per_token: one scale per (batch, head, token) over the head dimension. The hook sees the
  full keys/values (cache included) and each token's grid depends on that token only, so
  a run with a KV cache equals one without.
- per_head: one scale per (batch, head) over all tokens and dimensions present (coarser;
  with a cache the scale follows the tokens seen so far).
- keep_first N: the first N positions (where attention sinks form) stay in full precision
  and out of the per_head scale (KIVI / IntactKV style).
- key_rotation H (hadamard transform): keys are quantized in the basis k H and rotated
  back, as if queries and keys were both rotated online (q k^T is unchanged by H).

Probabilities: the weights (in [0, 1]) go through an unsigned grid of 2^b levels with a
per-row scale max(row) / (2^b - 1), computed on the fly. Why per row and not the fixed
1 / (2^b - 1): a fixed grid zeroes every weight below half a level (1/510 at 8 bits),
which erases whole diffuse softmax rows at long context (1/1024 each) and measures that,
not precision; the per-row scale keeps each row's largest weight exact for both kinds.
Zeros stay exactly zero, so softpick's sparsity survives, and an all-zero softpick row
(no key above threshold) stays all-zero.
"""

from __future__ import annotations

import torch

from softpick_bench.quant.activations import ErrorMeter

KV_GRANULARITIES = ("per_token", "per_head")


def fake_quantize_asymmetric(x: torch.Tensor, bits: int, dims: tuple[int, ...]) -> torch.Tensor:
    """Quantize-dequantize x with one (scale, zero point) per slice reduced over `dims`."""
    xf = x.float()
    lo = xf.amin(dim=dims, keepdim=True)
    hi = xf.amax(dim=dims, keepdim=True)
    qmax = 2**bits - 1
    scale = (hi - lo).clamp_min(1e-12) / qmax
    zero = torch.round(-lo / scale)
    q = torch.clamp(torch.round(xf / scale) + zero, 0, qmax)
    return ((q - zero) * scale).to(x.dtype)


class KVQuantizer:
    """AttentionHooks.kv: (key, value) -> fake-quantized (key, value)."""

    def __init__(self, bits: int, granularity: str, keep_first: int = 0, key_rotation: torch.Tensor | None = None):
        if granularity not in KV_GRANULARITIES:
            raise ValueError(f"KV granularity {granularity!r}; valid: {KV_GRANULARITIES}")
        if keep_first < 0:
            raise ValueError(f"KV keep_first must be >= 0, got {keep_first}")
        self.bits = bits
        self.dims = (-1,) if granularity == "per_token" else (-2, -1)
        self.keep_first = keep_first
        self.key_rotation = key_rotation
        self.key_meter = ErrorMeter()
        self.value_meter = ErrorMeter()

    def _quantize(self, x: torch.Tensor, rotation: torch.Tensor | None) -> torch.Tensor:
        n = min(self.keep_first, x.shape[-2])
        rest = x[..., n:, :]
        if rest.shape[-2] == 0:
            return x
        if rotation is not None:
            r = rotation.to(device=x.device, dtype=torch.float32)
            rest = (fake_quantize_asymmetric(rest.float() @ r, self.bits, self.dims) @ r.T).to(x.dtype)
        else:
            rest = fake_quantize_asymmetric(rest, self.bits, self.dims)
        return torch.cat([x[..., :n, :], rest], dim=-2) if n else rest

    def __call__(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kq = self._quantize(key, self.key_rotation)
        vq = self._quantize(value, None)
        self.key_meter.add(key, kq)
        self.value_meter.add(value, vq)
        return kq, vq


def quantize_probs(p: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2**bits - 1
    scale = p.amax(dim=-1, keepdim=True).clamp_min(1e-30) / levels
    return (torch.round(p / scale).clamp(0, levels) * scale).to(p.dtype)


class ProbsQuantizer:
    """AttentionHooks.probs: attention weights -> fake-quantized weights, before they multiply V."""

    def __init__(self, bits: int):
        self.bits = bits
        self.meter = ErrorMeter()
        self.zeros_kept = True  # every exact zero of the input stayed zero (checked while recording)

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        pq = quantize_probs(p, self.bits)
        if self.meter.recording:
            self.meter.add(p, pq)
            self.zeros_kept &= bool((pq[p == 0] == 0).all())
        return pq
