"""The paper's flash-linear-attention "transformer" checkpoints, converted exactly to Llama.

The mapping (PAPER.md section 2) is a pure renaming: same tensors, same rotary layout.
Upstream flash-linear-attention has no `attn_impl` and would silently run softmax, so the
attention kind is read from that string here, and options with no Llama equivalent are
refused rather than dropped.
"""

from __future__ import annotations

import math
import re

from transformers import LlamaConfig

from softpick_bench.errors import CheckpointError

ATTN_IMPL_TO_KIND = {
    "parallel_attn": "softmax",
    "parallel_softpick_attn": "softpick",
    "naive_softpick_attn": "softpick",
    "parallel_rectified_attn": "rectified",
}
UNSUPPORTED_ATTN_IMPL = {
    "parallel_scaled_softpick_attn": "scalable softpick needs the learnt per-head scale attn.s and "
    "the attn.logn buffer, which a Llama model has no place for",
}

_KEY_RULES = [
    (re.compile(r"^model\.embeddings\.weight$"), "model.embed_tokens.weight"),
    (re.compile(r"^model\.layers\.(\d+)\.attn_norm\.weight$"), r"model.layers.\1.input_layernorm.weight"),
    (
        re.compile(r"^model\.layers\.(\d+)\.attn\.([qkvo])_proj\.weight$"),
        r"model.layers.\1.self_attn.\2_proj.weight",
    ),
    (
        re.compile(r"^model\.layers\.(\d+)\.mlp_norm\.weight$"),
        r"model.layers.\1.post_attention_layernorm.weight",
    ),
    (
        re.compile(r"^model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight$"),
        r"model.layers.\1.mlp.\2_proj.weight",
    ),
    (re.compile(r"^model\.norm\.weight$"), "model.norm.weight"),
    (re.compile(r"^lm_head\.weight$"), "lm_head.weight"),
]


def is_fla_config(config: dict) -> bool:
    return config.get("model_type") == "transformer"


def fla_attention_kind(config: dict, where: str) -> str:
    impl = config.get("attn_impl")
    if impl is None:
        raise CheckpointError(
            f"{where}: flash-linear-attention config has no 'attn_impl'; cannot tell softmax from "
            f"softpick. Valid values: {', '.join(sorted(ATTN_IMPL_TO_KIND))}"
        )
    if impl in UNSUPPORTED_ATTN_IMPL:
        raise CheckpointError(f"{where}: attn_impl {impl!r} is not supported: {UNSUPPORTED_ATTN_IMPL[impl]}")
    if impl not in ATTN_IMPL_TO_KIND:
        raise CheckpointError(
            f"{where}: unknown attn_impl {impl!r}; valid: {', '.join(sorted(ATTN_IMPL_TO_KIND))}"
        )
    return ATTN_IMPL_TO_KIND[impl]


def _fla_intermediate_size(hidden: int, ratio: float) -> int:
    # flash-linear-attention's rule: 2/3 of hidden*ratio, rounded up to a multiple of 256
    return 256 * math.ceil(int(hidden * ratio * 2 / 3) / 256)


def fla_to_llama_config(config: dict, where: str) -> LlamaConfig:
    """Translate an fla "transformer" config.json, refusing options Llama cannot express."""
    for key, bad in (("qk_norm", True), ("qkv_bias", True)):
        if config.get(key) == bad:
            raise CheckpointError(f"{where}: option {key}={bad} has no Llama equivalent; only {key}=false loads")
    if config.get("window_size") is not None:
        raise CheckpointError(
            f"{where}: window_size={config['window_size']} (sliding window) has no Llama equivalent; "
            "only window_size=null loads"
        )
    act = config.get("hidden_act", "swish")
    if act not in ("swish", "silu"):
        raise CheckpointError(f"{where}: hidden_act {act!r} unsupported; valid: swish, silu")
    hidden = config["hidden_size"]
    heads = config["num_heads"]
    intermediate = config.get("intermediate_size") or _fla_intermediate_size(
        hidden, config.get("hidden_ratio") or 4
    )
    return LlamaConfig(
        vocab_size=config["vocab_size"],
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=heads,
        num_key_value_heads=config.get("num_kv_heads") or heads,
        head_dim=config.get("head_dim") or hidden // heads,
        hidden_act="silu",
        max_position_embeddings=config.get("max_position_embeddings", 2048),
        rms_norm_eps=config.get("norm_eps", 1e-6),
        rope_theta=config.get("rope_theta", 10000.0),
        tie_word_embeddings=config.get("tie_word_embeddings", False),
        bos_token_id=config.get("bos_token_id", 1),
        eos_token_id=config.get("eos_token_id", 2),
        attention_bias=False,
        mlp_bias=False,
    )


def fla_to_llama_key(key: str, where: str) -> str:
    for pattern, replacement in _KEY_RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    raise CheckpointError(f"{where}: state-dict key {key!r} has no Llama equivalent")


def convert_state_dict(state: dict, where: str) -> dict:
    return {fla_to_llama_key(k, where): v for k, v in state.items()}


def llama_to_fla_key(key: str) -> str:
    """The inverse renaming, used to write fla-format test checkpoints."""
    inverse = {
        "model.embed_tokens.weight": "model.embeddings.weight",
        "input_layernorm": "attn_norm",
        "self_attn.": "attn.",
        "post_attention_layernorm": "mlp_norm",
    }
    for old, new in inverse.items():
        key = key.replace(old, new)
    return key
