"""Plain-torch reference for softpick and the other attention normalisations.

This is the definition every fast kernel is checked against (PAPER.md section 1):

    softpick(x)_i = ReLU(exp(x_i) - 1) / sum_j |exp(x_j) - 1|

computed in the numerically safe form with a shift c:

    softpick(x)_i = ReLU(exp(x_i - c) - exp(-c)) / (sum_j |exp(x_j - c) - exp(-c)| + eps)

Masks are boolean (True = attend). Masked entries are excluded from the
denominator: an additive -inf mask would be wrong, since exp(-inf) - 1 = -1.

The shift is c = max(0, max over valid x). For a row whose maximum is >= 0 this
is the paper's form exactly. For a row whose valid scores are all negative the
output is exactly zero whatever the shift, and c = 0 keeps exp(-c) finite where
exp(-max) would overflow (max < -88 in float32). A fully masked row gives zeros.
The Triton kernels use the same shift (their running max starts at 0), so the
two agree to rounding on every input.
"""

from __future__ import annotations

import math

import torch

SOFTPICK_EPS = 1e-6

NORMALIZATIONS = ("softmax", "softpick", "rectified", "softmax1")


def _masked_fill(x: torch.Tensor, mask: torch.Tensor | None, value: float) -> torch.Tensor:
    return x if mask is None else x.masked_fill(~mask, value)


def softpick(
    x: torch.Tensor, mask: torch.Tensor | None = None, dim: int = -1, eps: float = SOFTPICK_EPS
) -> torch.Tensor:
    """Softpick along `dim`; `mask` is boolean and broadcastable to `x` (True = keep)."""
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"softpick needs a boolean mask (True = attend), got dtype {mask.dtype}")
    shift = _masked_fill(x, mask, -math.inf).amax(dim=dim, keepdim=True).clamp(min=0.0)
    centred = torch.exp(x - shift) - torch.exp(-shift)
    centred = _masked_fill(centred, mask, 0.0)
    denom = centred.abs().sum(dim=dim, keepdim=True) + eps
    return torch.relu(centred) / denom


def rectified_softmax(
    x: torch.Tensor, mask: torch.Tensor | None = None, dim: int = -1, eps: float = SOFTPICK_EPS
) -> torch.Tensor:
    """ReLU(e^x - 1) / sum ReLU(e^x - 1): softpick's numerator, a rectified denominator."""
    shift = _masked_fill(x, mask, -math.inf).amax(dim=dim, keepdim=True).clamp(min=0.0)
    num = _masked_fill(torch.relu(torch.exp(x - shift) - torch.exp(-shift)), mask, 0.0)
    return num / (num.sum(dim=dim, keepdim=True) + eps)


def softmax1(x: torch.Tensor, mask: torch.Tensor | None = None, dim: int = -1) -> torch.Tensor:
    """Off-by-one softmax: e^x / (1 + sum e^x)."""
    shift = _masked_fill(x, mask, -math.inf).amax(dim=dim, keepdim=True).clamp(min=0.0)
    num = _masked_fill(torch.exp(x - shift), mask, 0.0)
    return num / (torch.exp(-shift) + num.sum(dim=dim, keepdim=True))


def masked_softmax(x: torch.Tensor, mask: torch.Tensor | None = None, dim: int = -1) -> torch.Tensor:
    """Softmax whose fully masked rows are zero instead of NaN."""
    if mask is None:
        return torch.softmax(x, dim=dim)
    probs = torch.softmax(x.masked_fill(~mask, -math.inf), dim=dim)
    return torch.nan_to_num(probs, nan=0.0)


def normalize(scores: torch.Tensor, mask: torch.Tensor | None, kind: str) -> torch.Tensor:
    """Apply the named attention normalisation over the last dimension."""
    if kind == "softmax":
        return masked_softmax(scores, mask)
    if kind == "softpick":
        return softpick(scores, mask)
    if kind == "rectified":
        return rectified_softmax(scores, mask)
    if kind == "softmax1":
        return softmax1(scores, mask)
    raise ValueError(f"unknown attention normalisation {kind!r}; valid: {', '.join(NORMALIZATIONS)}")


def causal_mask(q_len: int, k_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (q_len, k_len) mask, bottom-right aligned: query i sees keys <= i + k_len - q_len.

    That alignment is the one a KV cache needs: the queries are the last q_len positions.
    """
    offset = k_len - q_len
    q = torch.arange(q_len, device=device)[:, None]
    k = torch.arange(k_len, device=device)[None, :]
    return k <= q + offset


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kind: str = "softpick",
    mask: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    return_weights: bool = False,
    probs_transform=None,
):
    """Materialised attention, the reference for every kernel.

    q: (B, Hq, Q, D); k, v: (B, Hkv, K, D) with Hq a multiple of Hkv (grouped-query
    attention: query head h reads key/value head h // (Hq // Hkv)).
    mask: boolean, broadcastable to (B, Hq, Q, K), True = attend. `causal` adds the
    bottom-right causal mask. `probs_transform`, if given, maps the weights before they
    multiply V (attention-probability quantization). Scores and weights are computed in float32 (float64 if
    the inputs are float64); the output has the dtype of q.
    Returns out (B, Hq, Q, D), and the weights (B, Hq, Q, K) if asked.
    """
    _, hq, q_len, d = q.shape
    hkv, k_len = k.shape[1], k.shape[2]
    if hq % hkv:
        raise ValueError(f"query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    if mask is not None and mask.dtype != torch.bool:
        raise TypeError(f"attention mask must be boolean (True = attend), got {mask.dtype}")
    group = hq // hkv
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    kx = k.to(compute).repeat_interleave(group, dim=1)
    vx = v.to(compute).repeat_interleave(group, dim=1)
    scale = d**-0.5 if scale is None else scale
    scores = torch.matmul(q.to(compute), kx.transpose(-1, -2)) * scale
    if causal:
        cm = causal_mask(q_len, k_len, q.device)
        mask = cm if mask is None else (mask & cm)
    weights = normalize(scores, mask, kind)
    if probs_transform is not None:
        weights = probs_transform(weights)
    out = torch.matmul(weights, vx).to(q.dtype)
    return (out, weights) if return_weights else out
