"""Rotation, smoothing, keep-first KV and FP8/FP4 formats, each against a plain reference."""

import copy
import itertools

import numpy as np
import pytest
import torch

from softpick_bench.config import _axes, _Where
from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.models.tiny import build_model, tiny_llama_config
from softpick_bench.quant import formats
from softpick_bench.quant.apply import check_spec, quantize
from softpick_bench.quant.attention_quant import KVQuantizer, fake_quantize_asymmetric
from softpick_bench.quant.base import QuantContext
from softpick_bench.quant.format_quant import format_shape_problem
from softpick_bench.quant.spec import QuantSpec
from softpick_bench.quant.transforms.hadamard import HadamardWidthError, _paley, hadamard
from softpick_bench.quant.transforms.pipeline import apply_transforms, transforms_shape_problem

# intermediate 96 = 8 x 12: the online Hadamard before down_proj needs the Paley factor
CFG = dict(vocab_size=256, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=96, max_positions=128)


def _model(kind: str, tie: bool = False):
    cfg = tiny_llama_config(**CFG)
    cfg.tie_word_embeddings = tie
    model = build_model(cfg, kind).float()
    if tie:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model


def _ctx():
    ids = torch.randint(0, CFG["vocab_size"], (4, 64), generator=torch.Generator().manual_seed(1))
    return QuantContext(calibration=lambda: ids, seed=0)


def _logits(model, seed=2):
    ids = torch.randint(0, CFG["vocab_size"], (2, 48), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


# --- Hadamard matrices -------------------------------------------------------------------


def _expand(entry: dict) -> list[dict]:
    """A grid entry's cells, as config expands them."""
    return [dict(combo) for combo in itertools.product(*_axes(_Where("t.yaml"), "quant[0]", entry))]


@pytest.mark.parametrize("n", [1, 2, 16, 12, 20, 36, 44, 96, 352])
def test_hadamard_is_orthonormal_with_plus_minus_entries(n):
    h = hadamard(n)
    np.testing.assert_allclose(h @ h.T, np.eye(n), atol=1e-12)
    np.testing.assert_allclose(np.abs(h) * np.sqrt(n), np.ones((n, n)), atol=1e-12)


def test_paley_ii_and_refused_widths_name_the_width():
    assert _paley(36) is not None  # 2 (17 + 1), 17 = 1 mod 4: Paley II (35 is no prime)
    for n in (6, 100):
        with pytest.raises(HadamardWidthError, match=f"width {n} "):
            hadamard(n)
    arch = {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 100}
    problem = transforms_shape_problem(QuantSpec(transforms=("hadamard",)), arch)
    assert "intermediate_size" in problem and "100" in problem
    assert transforms_shape_problem(QuantSpec(transforms=({"hadamard": {"online_down": False}},)), arch) is None


# --- rotation ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind,tie", [("softmax", False), ("softpick", False), ("softpick", True)])
def test_rotated_unquantized_model_keeps_its_logits(kind, tie):
    model = _model(kind, tie)
    ref = _logits(model)
    details = apply_transforms(model, QuantSpec(transforms=("hadamard",)), _ctx())
    rotated = details["applied"][0]
    assert rotated["online_down_width"] == 96 and rotated["residual_width"] == 64
    assert rotated["untied_embeddings"] is tie
    assert _rel(_logits(model), ref) <= 1e-4
    # the weights did change: the identity is not what passed
    original = _model(kind, tie).model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(model.model.layers[0].self_attn.q_proj.weight, original)
    assert torch.equal(model.model.layers[0].input_layernorm.weight.detach(), torch.ones(64))


def test_rotation_composes_with_weights_activations_and_kv_and_is_reported():
    model = _model("softpick")
    spec = QuantSpec(
        transforms=("hadamard",), method="rtn", bits=4, group_size=32,
        act_bits=4, act_granularity="per_token", kv_bits=4, kv_granularity="per_token",
    )
    report = quantize(model, spec, _ctx())
    assert report.details["transforms"]["max_rel_logit_change"] <= 1e-4
    assert report.details["kv"]["keys_in_hadamard_basis"] is True
    assert report.layers_quantized == 2 * 7  # down_proj's linear sits inside the online rotation
    assert spec.label() == "hadamard/rtn-w4-g32+a4tok+kv4tok"


def test_keys_in_hadamard_basis_equal_a_plain_rotate_quantize_rotate_back():
    torch.manual_seed(0)
    k, v = torch.randn(2, 2, 10, 16), torch.randn(2, 2, 10, 16)
    h = torch.from_numpy(hadamard(16)).float()
    kq, vq = KVQuantizer(3, "per_token", key_rotation=h)(k, v)
    torch.testing.assert_close(kq, fake_quantize_asymmetric(k @ h, 3, (-1,)) @ h.T)
    torch.testing.assert_close(vq, fake_quantize_asymmetric(v, 3, (-1,)))
    q = torch.randn(2, 2, 10, 16)  # rotating queries and keys both leaves the scores unchanged
    torch.testing.assert_close((q @ h) @ (k @ h).transpose(-1, -2), q @ k.transpose(-1, -2), atol=1e-5, rtol=1e-5)


# --- SmoothQuant ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["softmax", "softpick"])
def test_smoothed_unquantized_model_keeps_its_logits(kind):
    model = _model(kind)
    ref = _logits(model)
    smooth = {"smoothquant": {"alpha": 0.6, "nsamples": 4, "seq_len": 32}}
    spec = QuantSpec(transforms=(smooth,), act_bits=8, act_granularity="per_token")
    details = apply_transforms(model, spec, _ctx())["applied"][0]
    assert details["alpha"] == 0.6 and details["layers_smoothed"] == 2 * 7 and details["max_scale_ratio"] > 1
    assert _rel(_logits(model), ref) <= 1e-4


def test_rotation_then_smoothing_keeps_the_logits():
    model = _model("softpick")
    ref = _logits(model)
    smooth = {"smoothquant": {"nsamples": 2, "seq_len": 32}}
    spec = QuantSpec(transforms=("hadamard", smooth), act_bits=8, act_granularity="per_token")
    applied = apply_transforms(model, spec, _ctx())["applied"]
    assert applied[1]["down_proj_smoothed"] is False  # its input is rotated online: channels mixed
    assert _rel(_logits(model), ref) <= 1e-4


def test_smoothing_lowers_w8a8_activation_error_on_an_outlier_channel():
    model = _model("softmax")
    with torch.no_grad():
        for layer in model.model.layers:  # channel 5 of every attention and MLP input 40x larger
            layer.input_layernorm.weight[5] *= 40
            layer.post_attention_layernorm.weight[5] *= 40
    base = QuantSpec(method="rtn", bits=8, act_bits=8, act_granularity="per_token")
    transform = {"smoothquant": {"alpha": 0.5, "nsamples": 4, "seq_len": 64}}
    smooth = QuantSpec(**{**base.__dict__, "transforms": (transform,)})
    plain = quantize(copy.deepcopy(model), base, _ctx()).details["activation"]["mean_rel_error"]
    smoothed = quantize(copy.deepcopy(model), smooth, _ctx()).details["activation"]["mean_rel_error"]
    assert smoothed < 0.7 * plain, (smoothed, plain)


# --- keep-first KV ----------------------------------------------------------------------


@pytest.mark.parametrize("granularity,dims", [("per_token", (-1,)), ("per_head", (-2, -1))])
def test_kv_keep_first_keeps_the_first_positions_exact_and_out_of_the_scale(granularity, dims):
    torch.manual_seed(0)
    k, v = torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8)
    k[:, :, 0] *= 50  # a sink-like first key
    kq, vq = KVQuantizer(2, granularity, keep_first=3)(k, v)
    for x, xq in ((k, kq), (v, vq)):
        torch.testing.assert_close(xq[:, :, :3], x[:, :, :3], rtol=0, atol=0)
        torch.testing.assert_close(xq[:, :, 3:], fake_quantize_asymmetric(x[:, :, 3:], 2, dims), rtol=0, atol=0)
    short = torch.randn(1, 2, 2, 8)  # fewer positions than keep_first: nothing quantized
    assert torch.equal(KVQuantizer(2, granularity, keep_first=3)(short, short)[0], short)


# --- number formats ------------------------------------------------------------------------


def test_e2m1_rounds_to_the_hand_value_set_ties_to_even_saturating():
    values = torch.tensor([0.0, 0.5, 1, 1.5, 2, 3, 4, 6])
    assert torch.equal(formats.round_e2m1(values), values)
    assert torch.equal(formats.round_e2m1(-values), -values)
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    assert formats.round_e2m1(ties).tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]  # even codes 0, 2, 2, 4, 4, 6, 6
    assert formats.round_e2m1(torch.tensor([0.3, 2.4, 5.1, 7.0, 100.0])).tolist() == [0.5, 2.0, 6.0, 6.0, 6.0]


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_fp8_rounding_is_nearest_representable_value(fmt):
    codes = torch.arange(256, dtype=torch.uint8).view(formats.FP8_DTYPES[fmt]).float()
    grid = codes[torch.isfinite(codes)].unique()
    x = torch.randn(4000) * formats.fp8_max(fmt) / 8
    q = formats.round_fp8(x, fmt)
    nearest = (x[:, None] - grid[None, :]).abs().amin(dim=1)
    torch.testing.assert_close((q - x).abs(), nearest, rtol=0, atol=0)
    assert float(formats.round_fp8(torch.tensor([1e9]), fmt)) == formats.fp8_max(fmt)


def _e2m1_nearest(x):  # plain reference: nearest of the 15 signed values (ties never drawn by randn)
    grid = torch.tensor([-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6])
    return grid[(x.clamp(-6, 6)[..., None] - grid).abs().argmin(dim=-1)]


def test_mxfp4_matches_a_plain_per_block_reference():
    torch.manual_seed(0)
    x = torch.randn(3, 64) * torch.logspace(-3, 2, 64)
    out = formats.fake_quantize_mxfp4(x)
    for r, b in itertools.product(range(3), range(2)):
        block = x[r, 32 * b : 32 * (b + 1)]
        scale = 2.0 ** (np.floor(np.log2(float(block.abs().max()))) - 2)
        torch.testing.assert_close(out[r, 32 * b : 32 * (b + 1)], _e2m1_nearest(block / scale) * scale)


def test_nvfp4_matches_a_plain_per_block_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 48) * 3
    out = formats.fake_quantize_nvfp4(x)
    tensor_scale = float(x.abs().max()) / (6 * 448)
    for r, b in itertools.product(range(2), range(3)):
        block = x[r, 16 * b : 16 * (b + 1)]
        e4m3 = float(torch.tensor(float(block.abs().max()) / 6 / tensor_scale).to(torch.float8_e4m3fn).float())
        scale = e4m3 * tensor_scale
        torch.testing.assert_close(out[r, 16 * b : 16 * (b + 1)], _e2m1_nearest(block / scale) * scale)


@pytest.mark.parametrize(
    "spec,bits",
    [
        (
            QuantSpec(
                method="fp8", bits=8, group_size=32, options={"format": "e5m2"},
                act_bits=8, act_granularity="per_token", act_format="fp8_e5m2",
            ),
            8.5,
        ),
        (QuantSpec(method="mxfp4", bits=4, act_bits=4, act_granularity="per_token", act_format="mxfp4"), 4.25),
        (QuantSpec(method="nvfp4", bits=4, act_bits=4, act_granularity="per_tensor", act_format="nvfp4"), 4.5),
    ],
)
def test_format_methods_quantize_weights_and_activations(spec, bits):
    report = quantize(_model("softpick"), spec, _ctx())
    assert 0 < report.mean_rel_weight_error < 0.2
    assert abs(report.effective_bits - bits) < 0.01
    assert 0 < report.details["activation"]["mean_rel_error"] < 0.25
    assert report.details["activation"]["format"] == spec.act_format


# --- validation and the spec's shape ------------------------------------------------------


@pytest.mark.parametrize(
    "spec,message",
    [
        (QuantSpec(transforms=("rotate",)), "unknown transform 'rotate'"),
        (QuantSpec(transforms=({"hadamard": {"spin": True}},)), "no option"),
        (QuantSpec(transforms=("hadamard", "hadamard")), "twice"),
        (QuantSpec(transforms=({"smoothquant": {"alpha": 2}},), act_bits=8, act_granularity="per_token"), r"\[0, 1\]"),
        (QuantSpec(transforms=("smoothquant",), method="rtn", bits=4), "act_bits"),
        (QuantSpec(method="fp8", bits=8, options={"format": "e3m4"}), "e3m4"),
        (QuantSpec(method="mxfp4", bits=4, group_size=16), "32"),
        (QuantSpec(method="nvfp4", bits=3), "no 3-bit mode"),
        (QuantSpec(method="rtn", bits=8, act_bits=4, act_granularity="per_token", act_format="fp8_e4m3"), "act_bits 8"),
        (QuantSpec(act_bits=4, act_granularity="per_tensor", act_format="mxfp4"), "per_token"),
        (QuantSpec(act_bits=8, act_granularity="per_token", act_format="fp16"), "unknown act_format"),
        (QuantSpec(probs_bits=8, kv_keep_first=4), "without kv_bits"),
        (QuantSpec(kv_bits=4, kv_granularity="per_token", kv_keep_first=-1), "non-negative"),
    ],
)
def test_bad_specs_are_refused_at_plan_time(spec, message):
    with pytest.raises(UnsupportedQuantError, match=message):
        check_spec(spec, "cpu")


def test_block_formats_that_do_not_divide_a_width_are_refused_at_plan_time():
    arch = {"hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 80}
    assert "mxfp4 blocks of 32 do not divide the intermediate_size 80" in format_shape_problem(
        QuantSpec(method="mxfp4", bits=4), arch
    )
    assert "mxfp4" in format_shape_problem(QuantSpec(act_bits=4, act_granularity="per_token", act_format="mxfp4"), arch)
    assert format_shape_problem(QuantSpec(method="nvfp4", bits=4), arch) is None  # 80 = 5 x 16

    spec = QuantSpec(transforms=[{"smoothquant": {"alpha": 0.5}}, "hadamard"], act_bits=8, act_granularity="per_token")
    assert QuantSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["transforms"] == [{"smoothquant": {"alpha": 0.5}}, {"hadamard": {}}]
    assert not QuantSpec(transforms=("hadamard",)).is_baseline
    expanded = _expand({"method": "rtn", "bits": 4, "transforms": [[], ["hadamard"]]})
    assert [QuantSpec.from_dict(d).transforms for d in expanded] == [(), (("hadamard", ()),)]
    assert _expand({"transforms": ["hadamard", "smoothquant"]}) == [{"transforms": ["hadamard", "smoothquant"]}]
    with pytest.raises(UnsupportedQuantError, match="must be a name"):
        QuantSpec(transforms=[3])
