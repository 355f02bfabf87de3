"""Attention kinds registered with transformers, so a loaded model honours its own kind.

Each kind ("softmax", "softpick", "rectified", "softmax1") is registered twice:
- with `AttentionInterface`, the function that computes attention, and
- with `AttentionMaskInterface`, a boolean mask builder. Without it transformers
  hands a custom name `attention_mask=None`, losing the causal and padding masks;
  ours never skips the mask (allow_is_causal_skip=False), so padded batches and a
  KV cache (bottom-right aligned queries) reach the kernel intact.

Softmax is registered too (rather than left to "sdpa") so both sides of a pair run
through the same path, with the same hooks for KV-cache and attention-probability
quantization, and the same reference/kernel dispatch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from softpick_bench.kernels import dispatch
from softpick_bench.kernels.reference import NORMALIZATIONS

ATTENTION_KINDS = NORMALIZATIONS  # one transformers attn_implementation name per kind

HOOKS_ATTR = "softpick_bench_hooks"


@dataclass
class AttentionHooks:
    """Optional transforms inside the attention path, set on an attention module.

    kv: (key, value) -> (key, value), applied to the full keys/values read by attention
        (cache included), e.g. KV-cache fake quantization.
    probs: weights -> weights, applied to the normalised attention weights before they
        multiply V (attention-probability quantization).
    """

    kv: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    probs: Callable[[torch.Tensor], torch.Tensor] | None = None


def _boolean_mask(*args, **kwargs):
    kwargs["allow_is_causal_skip"] = False
    kwargs["allow_is_bidirectional_skip"] = False
    return sdpa_mask(*args, **kwargs)


def _make_attention_fn(kind: str):
    def attention_fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        if dropout and module.training:
            raise ValueError(f"attention dropout is not supported by the {kind!r} kernel (got {dropout})")
        hooks: AttentionHooks | None = getattr(module, HOOKS_ATTR, None)
        if hooks is not None and hooks.kv is not None:
            key, value = hooks.kv(key, value)
        mask = None
        if attention_mask is not None:
            if attention_mask.dtype != torch.bool:
                raise TypeError(
                    f"attention kind {kind!r} needs a boolean mask, got {attention_mask.dtype}; "
                    "was the model loaded with attn_implementation set to this kind?"
                )
            mask = attention_mask[:, :, :, : key.shape[-2]]
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        out = dispatch.attention_forward(
            query,
            key,
            value,
            kind=kind,
            mask=mask,
            scale=scale,
            causal=mask is None,  # our mask builder always builds a mask; None only outside it
            probs_transform=None if hooks is None else hooks.probs,
        )
        return out.transpose(1, 2).contiguous(), None

    attention_fn.__name__ = f"{kind}_attention"
    return attention_fn


def register_attention_kinds() -> None:
    """Register every kind with transformers (idempotent)."""
    for kind in ATTENTION_KINDS:
        AttentionInterface.register(kind, _make_attention_fn(kind))
        AttentionMaskInterface.register(kind, _boolean_mask)


register_attention_kinds()


def set_hooks(model: torch.nn.Module, hooks: AttentionHooks | None) -> int:
    """Attach (or with None, remove) hooks on every attention module; returns how many."""
    count = 0
    for module in model.modules():
        if hasattr(module, "q_proj") and hasattr(module, "k_proj") and hasattr(module, "o_proj"):
            if hooks is None:
                if hasattr(module, HOOKS_ATTR):
                    delattr(module, HOOKS_ATTR)
            else:
                setattr(module, HOOKS_ATTR, hooks)
            count += 1
    return count
