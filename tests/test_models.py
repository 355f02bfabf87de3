"""Registered attention kinds in transformers models, checkpoint formats and the pair check."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import AutoTokenizer, DynamicCache

from softpick_bench.errors import CheckpointError, PairMismatchError
from softpick_bench.kernels import reference
from softpick_bench.models import fla
from softpick_bench.models.checkpoint import load_checkpoint, save_checkpoint
from softpick_bench.models.pair import check_pair
from softpick_bench.models.tiny import build_model, tiny_llama_config

TOKENIZER = "softpick_bench/assets/tokenizer"
CONFIG = dict(vocab_size=97, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, max_positions=64)


def _rope(x, pos, theta=10000.0):
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = pos[:, :, None].double() * inv[None, None, :]  # (B, T, D/2)
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1)[:, None], torch.cat([ang.sin(), ang.sin()], -1)[:, None]
    half = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], -1)
    return (x.double() * cos + half.double() * sin).to(x.dtype)


def _rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def hand_forward(model, ids, valid, kind):
    """Llama forward written out by hand, attention through the reference (not transformers)."""
    cfg, sd = model.config, model.state_dict()
    b, t = ids.shape
    hq, hkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    pos = torch.arange(t)[None].expand(b, t)
    mask = (valid[:, None, None, :] & reference.causal_mask(t, t))
    h = sd["model.embed_tokens.weight"][ids]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        x = _rms(h, sd[p + "input_layernorm.weight"], cfg.rms_norm_eps)
        q = (x @ sd[p + "self_attn.q_proj.weight"].T).view(b, t, hq, d).transpose(1, 2)
        k = (x @ sd[p + "self_attn.k_proj.weight"].T).view(b, t, hkv, d).transpose(1, 2)
        v = (x @ sd[p + "self_attn.v_proj.weight"].T).view(b, t, hkv, d).transpose(1, 2)
        q, k = _rope(q, pos), _rope(k, pos)
        a = reference.attention(q, k, v, kind, mask=mask).transpose(1, 2).reshape(b, t, hq * d)
        h = h + a @ sd[p + "self_attn.o_proj.weight"].T
        x = _rms(h, sd[p + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
        gate, up = x @ sd[p + "mlp.gate_proj.weight"].T, x @ sd[p + "mlp.up_proj.weight"].T
        h = h + (F.silu(gate) * up) @ sd[p + "mlp.down_proj.weight"].T
    return _rms(h, sd["model.norm.weight"], cfg.rms_norm_eps) @ sd["lm_head.weight"].T


@pytest.fixture(scope="module")
def softpick_model():
    return build_model(tiny_llama_config(**CONFIG), "softpick", seed=1)


def _ids(b=3, t=12, seed=0):
    return torch.randint(3, 97, (b, t), generator=torch.Generator().manual_seed(seed))


def test_logits_match_hand_forward_without_padding(softpick_model):
    ids = _ids()
    with torch.no_grad():
        got = softpick_model(input_ids=ids).logits
    ref = hand_forward(softpick_model, ids, torch.ones_like(ids, dtype=torch.bool), "softpick")
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_logits_match_hand_forward_with_left_and_right_padding(softpick_model):
    ids = _ids()
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[0, :4] = False  # left padding
    valid[1, -5:] = False  # right padding
    with torch.no_grad():
        got = softpick_model(input_ids=ids, attention_mask=valid.long()).logits
    ref = hand_forward(softpick_model, ids, valid, "softpick")
    torch.testing.assert_close(got[valid], ref[valid], rtol=1e-5, atol=1e-5)


def test_padding_changes_logits(softpick_model):
    """Guards the test above: a model that ignored the mask would fail here."""
    ids = _ids()
    valid = torch.ones_like(ids, dtype=torch.bool)
    valid[0, :4] = False
    with torch.no_grad():
        padded = softpick_model(input_ids=ids, attention_mask=valid.long()).logits
        plain = softpick_model(input_ids=ids).logits
    assert (padded[0, 4:] - plain[0, 4:]).abs().max() > 1e-4


def test_kv_cache_decoding_matches_hand_forward(softpick_model):
    ids = _ids(b=2, t=10, seed=3)
    cache = DynamicCache(config=softpick_model.config)
    with torch.no_grad():
        first = softpick_model(input_ids=ids[:, :6], past_key_values=cache, use_cache=True).logits
        steps = [first]
        for t in range(6, 10):
            steps.append(softpick_model(input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True).logits)
    got = torch.cat(steps, dim=1)
    ref = hand_forward(softpick_model, ids, torch.ones_like(ids, dtype=torch.bool), "softpick")
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_softpick_and_softmax_differ_on_same_weights(softpick_model):
    softmax_model = build_model(tiny_llama_config(**CONFIG), "softmax", seed=1)
    ids = _ids()
    with torch.no_grad():
        a, b = softpick_model(input_ids=ids).logits, softmax_model(input_ids=ids).logits
    assert (a - b).abs().max() > 1e-3
    ref = hand_forward(softmax_model, ids, torch.ones_like(ids, dtype=torch.bool), "softmax")
    torch.testing.assert_close(b, ref, rtol=1e-5, atol=1e-5)


def _save_pair(tmp_path, **overrides):
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    paths = {}
    for kind in ("softmax", "softpick"):
        cfg = dict(CONFIG, vocab_size=len(tok), **(overrides if kind == "softpick" else {}))
        model = build_model(tiny_llama_config(**cfg), kind, seed=0)
        save_checkpoint(model, tok, tmp_path / kind, kind)
        paths[kind] = str(tmp_path / kind)
    return paths


def test_checkpoint_roundtrip_resolves_kind(tmp_path):
    paths = _save_pair(tmp_path)
    loaded = load_checkpoint(paths["softpick"])
    assert loaded.kind == "softpick" and loaded.model.config._attn_implementation == "softpick"
    assert loaded.kind_source == "config.json attention_kind"
    check_pair(paths["softmax"], paths["softpick"])


def test_pair_check_names_first_difference(tmp_path):
    paths = _save_pair(tmp_path, intermediate=96)
    with pytest.raises(PairMismatchError, match="intermediate_size"):
        check_pair(paths["softmax"], paths["softpick"])


def _write_fla(src_model, folder, attn_impl, **extra):
    folder.mkdir(parents=True)
    cfg = src_model.config
    fla_cfg = {
        "model_type": "transformer",
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_heads": cfg.num_attention_heads,
        "num_kv_heads": cfg.num_key_value_heads,
        "hidden_ratio": 4,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": "swish",
        "norm_eps": cfg.rms_norm_eps,
        "rope_theta": 10000.0,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": False,
        "vocab_size": cfg.vocab_size,
        "attn_impl": attn_impl,
        "qk_norm": False,
        "qkv_bias": False,
        "window_size": None,
        "fuse_norm": True,
        "fuse_swiglu": True,
        "fuse_cross_entropy": True,
        **extra,
    }
    (folder / "config.json").write_text(json.dumps(fla_cfg))
    state = {fla.llama_to_fla_key(k): v.contiguous() for k, v in src_model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))
    AutoTokenizer.from_pretrained(TOKENIZER).save_pretrained(str(folder))


def test_fla_checkpoint_loads_to_identical_logits(tmp_path):
    tok = AutoTokenizer.from_pretrained(TOKENIZER)
    src = build_model(tiny_llama_config(**dict(CONFIG, vocab_size=len(tok))), "softpick", seed=2)
    _write_fla(src, tmp_path / "fla", "parallel_softpick_attn")
    loaded = load_checkpoint(tmp_path / "fla")
    assert loaded.format == "fla" and loaded.kind == "softpick"
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, src(input_ids=ids).logits)


@pytest.mark.parametrize(
    "attn_impl,extra,message",
    [
        ("parallel_softpick_attn", {"qk_norm": True}, "qk_norm"),
        ("parallel_softpick_attn", {"window_size": 512}, "window_size"),
        ("parallel_scaled_softpick_attn", {}, "scalable softpick"),
        ("flash_mystery_attn", {}, "unknown attn_impl"),
    ],
)
def test_fla_unsupported_options_rejected(tmp_path, attn_impl, extra, message):
    src = build_model(tiny_llama_config(**dict(CONFIG, vocab_size=8192)), "softmax", seed=0)
    _write_fla(src, tmp_path / "fla", attn_impl, **extra)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "fla")


def test_missing_checkpoint_is_clear(tmp_path):
    with pytest.raises(CheckpointError, match="neither an existing folder nor a hub id"):
        load_checkpoint(str(tmp_path / "nope"))
