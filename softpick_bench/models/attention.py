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

Packed (varlen) batches: several sequences in one row of a (1, N) batch, position ids
restarting at 0 for each, and transformers' FlashAttentionKwargs `cu_seq_lens_q`,
`cu_seq_lens_k` (cumulative offsets, S + 1 entries) and `max_length_q`/`max_length_k` passed
to the model's forward, which hands them to every attention call. Each sequence then attends
causally to itself only. The mask builder never sees those kwargs, and from packed position
ids alone transformers would build a dense (1, 1, N, N) block-diagonal mask; so the model is
called with `attention_mask=packed_attention_mask(...)`, a 4D placeholder that transformers
returns as is (no mask is built) and that the attention function accepts only together
with cu_seq_lens. On CUDA the Triton kernel runs its cu_seqlens path; elsewhere, or with
hooks set, each sequence runs on its own through the usual dispatch (hooks see one
sequence's keys and values, as in an unpacked batch).
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


_PACKED_ATTR = "_softpick_bench_packed_placeholder"


def packed_attention_mask(device: torch.device | str | None = None) -> torch.Tensor:
    """The `attention_mask` to pass with packed inputs and cu_seq_lens kwargs (see the module docstring).

    A (1, 1, 1, 1) boolean placeholder: transformers returns any 4D mask unchanged, so no
    (N, N) mask is built; the attention function checks for this object and takes the
    causal block-diagonal structure from cu_seq_lens_q/k. Without cu_seq_lens it raises.
    """
    mask = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=device)
    setattr(mask, _PACKED_ATTR, True)
    return mask


# Model types whose CausalLM head is exactly lm_head(decoder(ids)) (no logit scaling or capping),
# and whose decoder takes position_ids and hands its extra kwargs to the attention function.
PLAIN_HEAD_TYPES = ("llama",)


def packing_problem(model) -> str | None:
    """Why packed (cu_seq_lens) batches cannot run on `model` (None: they can)."""
    config = model.config
    if getattr(config, "model_type", None) not in PLAIN_HEAD_TYPES:
        return f"model type {getattr(config, 'model_type', None)!r} is not one of {PLAIN_HEAD_TYPES}"
    if getattr(config, "_attn_implementation", None) not in ATTENTION_KINDS:
        return f"attention implementation {config._attn_implementation!r} is not one of {ATTENTION_KINDS}"
    return None


def has_attention_hooks(model) -> bool:
    """Whether KV or probability quantization hooks are set (packed batches would apply them per sequence)."""
    return any(getattr(m, HOOKS_ATTR, None) is not None for m in model.modules())


def packed_hidden_states(model, ids: torch.Tensor, positions: torch.Tensor, cu_seqlens: torch.Tensor,
                         longest: int) -> torch.Tensor:
    """The decoder's last hidden states (N, hidden) for one packed row of N tokens: `positions`
    restarting at 0 for each sequence, `cu_seqlens` (S + 1 int32 offsets), `longest` the longest
    sequence. Each sequence attends causally to itself only; no mask is built."""
    return model.get_decoder()(
        input_ids=ids[None],
        position_ids=positions[None],
        attention_mask=packed_attention_mask(ids.device),
        use_cache=False,
        cu_seq_lens_q=cu_seqlens,
        cu_seq_lens_k=cu_seqlens,
        max_length_q=longest,
        max_length_k=longest,
    ).last_hidden_state[0]


def _is_packed_placeholder(mask) -> bool:
    return mask is not None and getattr(mask, _PACKED_ATTR, False)


def packed_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    kind: str,
    scale: float,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    hooks: AttentionHooks | None = None,
    use_kernel: bool | None = None,
) -> torch.Tensor:
    """Causal attention of packed sequences: query (1, Hq, Nq, D), key/value (1, Hkv, Nk, D).

    Sequence i holds query rows cu_seqlens_q[i]:cu_seqlens_q[i+1] and key rows
    cu_seqlens_k[i]:cu_seqlens_k[i+1] (bottom-right causal alignment within it).
    use_kernel: the Triton cu_seqlens path (default: on CUDA without hooks); otherwise each
    sequence runs alone through `dispatch.attention_forward` with the hooks applied to it.
    Returns (1, Hq, Nq, D).
    """
    if query.shape[0] != 1 or key.shape[0] != 1:
        raise ValueError(f"packed attention takes one row (batch 1); got query {tuple(query.shape)}")
    if use_kernel is None:
        use_kernel = query.is_cuda and (hooks is None or (hooks.kv is None and hooks.probs is None))
    if use_kernel:
        if hooks is not None and (hooks.kv is not None or hooks.probs is not None):
            raise ValueError("the packed kernel path runs no attention hooks; use_kernel=False applies them per sequence")
        from softpick_bench.kernels.flash import flash_attention  # triton imported only when needed

        out = flash_attention(
            query[0].transpose(0, 1),  # (Nq, Hq, D) views, unit last stride
            key[0].transpose(0, 1),
            value[0].transpose(0, 1),
            kind=kind,
            causal=True,
            scale=scale,
            cu_seqlens_q=cu_seqlens_q.to(torch.int32),
            cu_seqlens_k=cu_seqlens_k.to(torch.int32),
            max_seqlen_q=None if max_length_q is None else int(max_length_q),
            max_seqlen_k=None if max_length_k is None else int(max_length_k),
        )
        return out.transpose(0, 1).unsqueeze(0)
    bounds_q = cu_seqlens_q.tolist()
    bounds_k = cu_seqlens_k.tolist()
    if len(bounds_q) != len(bounds_k) or bounds_q[-1] != query.shape[2] or bounds_k[-1] != key.shape[2]:
        raise ValueError(
            f"cu_seqlens_q/k ({len(bounds_q)}, {len(bounds_k)} entries, ending at {bounds_q[-1]}, {bounds_k[-1]}) "
            f"do not describe query/key rows of {query.shape[2]}, {key.shape[2]}"
        )
    out = torch.empty_like(query)
    for i in range(len(bounds_q) - 1):
        q0, q1, k0, k1 = bounds_q[i], bounds_q[i + 1], bounds_k[i], bounds_k[i + 1]
        k_seg, v_seg = key[:, :, k0:k1], value[:, :, k0:k1]
        if hooks is not None and hooks.kv is not None:
            k_seg, v_seg = hooks.kv(k_seg, v_seg)
        out[:, :, q0:q1] = dispatch.attention_forward(
            query[:, :, q0:q1], k_seg, v_seg, kind=kind, mask=None, scale=scale, causal=True,
            probs_transform=None if hooks is None else hooks.probs,
        )
    return out


def _make_attention_fn(kind: str):
    def attention_fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        if dropout and module.training:
            raise ValueError(f"attention dropout is not supported by the {kind!r} kernel (got {dropout})")
        hooks: AttentionHooks | None = getattr(module, HOOKS_ATTR, None)
        cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
        packed = _is_packed_placeholder(attention_mask)
        if cu_q is not None or cu_k is not None or packed:
            if cu_q is None or cu_k is None or not (packed or attention_mask is None):
                raise ValueError(
                    f"attention kind {kind!r}: packed inputs need cu_seq_lens_q and cu_seq_lens_k together with "
                    "attention_mask=packed_attention_mask() (or None); got "
                    f"cu_seq_lens_q {'set' if cu_q is not None else 'None'}, "
                    f"cu_seq_lens_k {'set' if cu_k is not None else 'None'}, "
                    f"attention_mask {'placeholder' if packed else type(attention_mask).__name__}"
                )
            out = packed_attention(
                query, key, value, kind, scaling if scaling is not None else query.shape[-1] ** -0.5,
                cu_q, cu_k, kwargs.get("max_length_q"), kwargs.get("max_length_k"), hooks=hooks,
            )
            return out.transpose(1, 2).contiguous(), None
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
