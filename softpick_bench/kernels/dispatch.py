"""One entry point for attention: the Triton kernel on CUDA tensors, the reference elsewhere.

Models call `attention_forward`; which implementation ran is decided here only, from
the device of the inputs, so evaluation, calibration and analysis all honour it.

On CUDA the boolean mask transformers builds (sdpa_mask: bottom-right causal AND key
padding) is recognised exactly and replaced by the kernel's fast path (causal flag plus a
per-batch valid key range); any other mask is read by the kernel tile by tile. There is
no silent fallback to the reference on CUDA: unsupported inputs raise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from softpick_bench.kernels import reference


@dataclass
class MaskPlan:
    """How the kernel will honour a mask: causal flag, per-batch key range, or a dense mask."""

    causal: bool
    key_start: torch.Tensor | None = None
    key_end: torch.Tensor | None = None
    dense_mask: torch.Tensor | None = None


def plan_mask(mask: torch.Tensor | None, b: int, hq: int, q_len: int, k_len: int, causal: bool) -> MaskPlan:
    """Recognise `mask` (& causal) as causal/non-causal plus one contiguous key range per batch.

    The check is exact: the candidate is rebuilt and compared element by element on the
    mask's device (one pass over a (B, Q, K) boolean, far cheaper than the attention).
    """
    if mask is None:
        return MaskPlan(causal=causal)
    if mask.dtype != torch.bool:
        raise TypeError(f"attention mask must be boolean (True = attend), got {mask.dtype}")
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    if mask.dim() != 4 or mask.shape[1] != 1:  # per-head masks: read tile by tile
        return MaskPlan(causal=causal, dense_mask=mask)
    full = mask.expand(b, 1, q_len, k_len)[:, 0]
    tri = reference.causal_mask(q_len, k_len, mask.device)
    eff = full & tri if causal else full
    seen = eff.any(dim=1)  # (B, K): keys some query attends
    pos = torch.arange(k_len, device=mask.device)
    has_any = seen.any(dim=1)
    start = torch.where(has_any, seen.int().argmax(dim=1), 0)
    end = torch.where(has_any, k_len - seen.flip(1).int().argmax(dim=1), 0)
    in_range = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])  # (B, K)
    if torch.equal(eff, in_range[:, None, :] & tri):
        return MaskPlan(causal=True, key_start=start, key_end=end)
    if torch.equal(eff, in_range[:, None, :].expand(b, q_len, k_len)):
        return MaskPlan(causal=False, key_start=start, key_end=end)
    return MaskPlan(causal=causal, dense_mask=mask)


def triton_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kind: str, mask: torch.Tensor | None, scale: float,
    causal: bool = False,
) -> torch.Tensor:
    """The kernel path of `attention_forward` (also runs on CPU under TRITON_INTERPRET=1)."""
    from softpick_bench.kernels.flash import flash_attention  # triton imported only when needed

    b, hq, q_len, _ = q.shape
    plan = plan_mask(mask, b, hq, q_len, k.shape[2], causal)
    return flash_attention(
        q, k, v, kind=kind, causal=plan.causal, scale=scale,
        key_start=plan.key_start, key_end=plan.key_end, mask=plan.dense_mask,
    )


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
    multiply V (attention-probability quantization). It needs the weights materialised,
    so it runs the reference on every device (same function, slower).
    Returns (B, Hq, Q, D) in q's dtype.
    """
    if probs_transform is not None:
        return reference.attention(
            q, k, v, kind=kind, mask=mask, causal=causal, scale=scale, probs_transform=probs_transform
        )
    if q.device.type == "cuda":
        return triton_attention(q, k, v, kind, mask, scale, causal)
    return reference.attention(q, k, v, kind=kind, mask=mask, causal=causal, scale=scale)
