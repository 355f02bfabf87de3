"""Where the pieces of a Llama-style decoder are, for transforms that rewrite weights across layers."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from softpick_bench.errors import UnsupportedQuantError

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass
class Layout:
    embed: nn.Embedding
    layers: list[nn.Module]  # each with input_layernorm, self_attn, post_attention_layernorm, mlp
    norm: nn.Module
    lm_head: nn.Linear
    heads: int
    kv_heads: int
    head_dim: int


def llama_layout(model: nn.Module, what: str) -> Layout:
    """The decoder's parts, or UnsupportedQuantError naming what is missing."""
    inner = getattr(model, "model", None)
    parts = (getattr(inner, "embed_tokens", None), getattr(inner, "layers", None), getattr(inner, "norm", None))
    if inner is None or any(p is None for p in parts) or not hasattr(model, "lm_head"):
        raise UnsupportedQuantError(
            f"{what} needs a Llama-style model (model.embed_tokens, model.layers, model.norm, lm_head); "
            f"got {type(model).__name__}"
        )
    for i, layer in enumerate(inner.layers):
        for attr in ("input_layernorm", "post_attention_layernorm"):
            if not hasattr(layer, attr):
                raise UnsupportedQuantError(f"{what}: layer {i} has no {attr}")
        for parent, names in ((layer.self_attn, ATTN), (layer.mlp, MLP)):
            for n in names:
                module = getattr(parent, n, None)
                if n == "down_proj" and isinstance(getattr(module, "inner", None), nn.Linear):
                    continue  # behind an online rotation (rotation.OnlineHadamard)
                if not isinstance(module, nn.Linear):
                    raise UnsupportedQuantError(
                        f"{what}: layer {i} {n} is {type(module).__name__}, not nn.Linear "
                        "(transforms run before any weight method: list them first)"
                    )
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    return Layout(parts[0], list(parts[1]), parts[2], model.lm_head, cfg.num_attention_heads, kv_heads, head_dim)
