"""The Llama decoder's elementwise work fused by torch.compile, its matmuls and attention untouched.

At the sweep's packs (1 x 131072 tokens, 340M shape) the eager decoder spends as much time moving
activations through memory as in its matmuls: RMSNorm alone is six kernels over float32 copies
of the hidden state, rotary embedding five per tensor, SwiGLU and each residual add one or two
more. Inside `fused_forward(model)` every decoder layer runs
    h = x + attention(rms_norm(x))          rms_norm: one kernel
    y = h + mlp(rms_norm(h))                residual add and norm: one kernel; silu(g) * u: one
and the rotary embedding is one kernel per tensor. The q/k/v/o and MLP projections are the
layer's own modules (so quantized and hooked linears run as they are), attention is the model's
own attention function (our Triton kernel on CUDA). torch.compile is used for the fusion rather
than hand-written kernels; each function is compiled once per process and shape class.

The math is eager's (float32 norm, same epsilon, same weight order) but fused kernels round at
other points (e.g. x + attention is not rounded to bf16 before its norm), so bf16 results differ
from eager by bf16 rounding: tests/test_fused_forward.py bounds the difference by eager's own
difference from float32. The record of every task says which forward ran.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from transformers.models.llama import modeling_llama

# transformers' own rotary embedding, compiled as it is (it is pure tensor code)
_EAGER_ROTARY = modeling_llama.apply_rotary_pos_emb


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _add_rms_norm(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, eps: float):
    h = x + y
    return h, _rms_norm(h, weight, eps)


def _silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


_COMPILED: dict = {}


def _compiled(fn):
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, fullgraph=True)
    return _COMPILED[fn]


def unfusable(model) -> str | None:
    """Why `fused_forward` cannot run on this model (None: it can)."""
    config = model.config
    if getattr(config, "model_type", None) != "llama":
        return f"model type {getattr(config, 'model_type', None)!r} is not 'llama'"
    if getattr(config, "hidden_act", None) != "silu":
        return f"hidden_act {getattr(config, 'hidden_act', None)!r} is not 'silu'"
    for i, layer in enumerate(model.get_decoder().layers):
        for part, cls in (("input_layernorm", modeling_llama.LlamaRMSNorm),
                          ("post_attention_layernorm", modeling_llama.LlamaRMSNorm),
                          ("mlp", modeling_llama.LlamaMLP), ("self_attn", modeling_llama.LlamaAttention)):
            module = getattr(layer, part, None)
            if type(module) is not cls:
                return f"layer {i} {part} is {type(module).__name__}, not transformers' {cls.__name__}"
        if type(layer) is not modeling_llama.LlamaDecoderLayer:
            return f"layer {i} is {type(layer).__name__}, not transformers' LlamaDecoderLayer"
    return None


def _layer_forward(layer):
    norm_in, norm_post, mlp = layer.input_layernorm, layer.post_attention_layernorm, layer.mlp
    rms_norm, add_rms_norm, silu_mul = _compiled(_rms_norm), _compiled(_add_rms_norm), _compiled(_silu_mul)

    def forward(hidden_states, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False,
                position_embeddings=None, **kwargs):
        normed = rms_norm(hidden_states, norm_in.weight, norm_in.variance_epsilon)
        attn, _ = layer.self_attn(hidden_states=normed, attention_mask=attention_mask, position_ids=position_ids,
                                  past_key_values=past_key_values, use_cache=use_cache,
                                  position_embeddings=position_embeddings, **kwargs)
        hidden, normed = add_rms_norm(hidden_states, attn, norm_post.weight, norm_post.variance_epsilon)
        return hidden + mlp.down_proj(silu_mul(mlp.gate_proj(normed), mlp.up_proj(normed)))

    return forward


@contextlib.contextmanager
def fused_forward(model):
    """Within the block, `model`'s decoder layers run the fused forward (see the module docstring).

    Raises ValueError, before changing anything, if the model is not a plain transformers Llama."""
    problem = unfusable(model)
    if problem:
        raise ValueError(f"forward 'fused' cannot run on this model: {problem}; use forward 'eager'")
    layers = list(model.get_decoder().layers)
    for layer in layers:
        layer.forward = _layer_forward(layer)  # instance attribute: nn.Module.__call__ finds it first
    modeling_llama.apply_rotary_pos_emb = _compiled(_EAGER_ROTARY)  # LlamaAttention looks it up at each call
    try:
        yield model
    finally:
        modeling_llama.apply_rotary_pos_emb = _EAGER_ROTARY
        for layer in layers:
            del layer.forward


def scoring_forward(model, forward: str):
    """The context a task scores in: `fused_forward(model)` for 'fused', nothing for 'eager'."""
    if forward == "fused":
        return fused_forward(model)
    if forward == "eager":
        return contextlib.nullcontext(model)
    raise ValueError(f"forward {forward!r} unknown; valid: eager, fused")
