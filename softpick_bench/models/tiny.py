"""Small Llama-style models built in code: the shipped demo pair and test fixtures."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from softpick_bench.models.attention import ATTENTION_KINDS, register_attention_kinds


def tiny_llama_config(
    vocab_size: int = 8192,
    hidden: int = 128,
    layers: int = 4,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 384,
    max_positions: int = 1024,
    bos_token_id: int = 0,
    eos_token_id: int = 1,
    pad_token_id: int = 2,
) -> LlamaConfig:
    """The paper's architecture (PAPER.md section 2) scaled down: RMSNorm 1e-6, RoPE 1e4, SwiGLU, no bias."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        hidden_act="silu",
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )


def build_model(config: LlamaConfig, kind: str, seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised model running attention `kind`; the same seed gives the same weights."""
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"attention kind {kind!r} unknown; valid: {', '.join(ATTENTION_KINDS)}")
    register_attention_kinds()
    config = LlamaConfig.from_dict(config.to_dict())
    config._attn_implementation = kind
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.config.attention_kind = kind
    return model.eval()
