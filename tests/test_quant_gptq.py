"""GPTQ: solver quality against RTN on random layers, and whole-model calibration through the model's own attention."""

import copy
import itertools

import pytest
import torch

from softpick_bench.kernels import dispatch
from softpick_bench.models.tiny import build_model, tiny_llama_config
from softpick_bench.quant.apply import quantize
from softpick_bench.quant.base import QuantContext
from softpick_bench.quant.gptq_solver import gptq_quantize, output_error
from softpick_bench.quant.rtn import fake_quantize
from softpick_bench.quant.spec import QuantSpec


def _layer(seed: int = 0, n_in: int = 128, n_out: int = 96, n: int = 1024):
    """A random layer and correlated calibration inputs with a few outlier features (as in LLMs)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=g) @ (torch.randn(n_in, n_in, generator=g) / n_in**0.5)
    x += 0.3 * torch.randn(n, n_in, generator=g)
    x[:, :3] *= 8
    w = 0.05 * torch.randn(n_out, n_in, generator=g)
    return w, x, 2 * x.T @ x / n


@pytest.mark.parametrize(
    ("group_size", "symmetric", "act_order"), [(None, True, False), (32, False, False), (32, True, True)]
)
def test_gptq_output_error_at_most_rtn_and_falls_with_bits(group_size, symmetric, act_order):
    w, x, h = _layer()
    gptq_errors = []
    for bits in range(2, 9):
        q = gptq_quantize(w, h, bits, group_size, symmetric, act_order=act_order)
        r = fake_quantize(w, bits, group_size, symmetric)
        e_gptq, e_rtn = output_error(w, q, x), output_error(w, r, x)
        assert e_gptq <= e_rtn, f"{bits} bits: GPTQ {e_gptq:.4f} > RTN {e_rtn:.4f}"
        gptq_errors.append(e_gptq)
    assert all(a > b for a, b in itertools.pairwise(gptq_errors)), gptq_errors
    assert gptq_errors[-1] > 0


def test_gptq_result_lies_on_the_grid():
    """Every group of the result has at most 2^b distinct values: it is a real b-bit weight."""
    w, _, h = _layer(1)
    q = gptq_quantize(w, h, 3, 32, False)
    for row in q.reshape(-1, 32):
        assert torch.unique(row).numel() <= 8


def _tiny(kind: str):
    return build_model(tiny_llama_config(hidden=64, heads=4, kv_heads=2, intermediate=128, layers=2), kind, seed=3)


def _calibration():
    ids = torch.randint(3, 8192, (4, 48), generator=torch.Generator().manual_seed(7))
    return QuantContext(calibration=lambda: ids, seed=0)


SPEC = QuantSpec("gptq", 3, 32, options={"damp": 0.01})


def test_softpick_model_is_calibrated_through_softpick(monkeypatch):
    """Every attention call during GPTQ calibration ran softpick; softmax calibration gives other weights."""
    seen = []
    original = dispatch.attention_forward

    def spy(*args, **kwargs):
        seen.append(kwargs["kind"])
        return original(*args, **kwargs)

    monkeypatch.setattr(dispatch, "attention_forward", spy)
    softpick = _tiny("softpick")
    as_softmax = copy.deepcopy(softpick)
    as_softmax.config._attn_implementation = "softmax"  # same weights, other attention

    report = quantize(softpick, SPEC, _calibration())
    assert seen and set(seen) == {"softpick"}
    assert report.details["calibration_attention_calls"] == {"softpick": len(seen)}
    seen.clear()
    quantize(as_softmax, SPEC, _calibration())
    assert set(seen) == {"softmax"}

    # layer 0's q/k/v see the same inputs either way; everything after attention differs
    a, b = softpick.model.layers[0], as_softmax.model.layers[0]
    assert torch.equal(a.self_attn.q_proj.weight, b.self_attn.q_proj.weight)
    assert not torch.equal(a.self_attn.o_proj.weight, b.self_attn.o_proj.weight)
    assert not torch.equal(
        softpick.model.layers[1].mlp.down_proj.weight, as_softmax.model.layers[1].mlp.down_proj.weight
    )


def test_gptq_model_report_and_determinism():
    m1, m2 = _tiny("softpick"), _tiny("softpick")
    r1 = quantize(m1, SPEC, _calibration())
    r2 = quantize(m2, SPEC, _calibration())
    assert r1.layers_quantized == 14 and r1.layers_total == 16
    assert r1.skipped_layers == ["model.embed_tokens", "lm_head"]
    assert r1.effective_bits == pytest.approx(3 + 16 / 32)
    assert 0 < r1.mean_rel_weight_error == r2.mean_rel_weight_error
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)


def test_later_blocks_are_fitted_to_quantized_earlier_blocks():
    """Block 1's result depends on block 0 having been quantized first (inputs taken after quantization)."""
    quantized = _tiny("softpick")
    quantize(quantized, SPEC, _calibration())
    only_block1 = _tiny("softpick")
    quantize(only_block1, QuantSpec("gptq", 3, 32, skip=("embed_tokens", "lm_head", "0")), _calibration())
    w_a = quantized.model.layers[1].self_attn.q_proj.weight
    w_b = only_block1.model.layers[1].self_attn.q_proj.weight
    assert not torch.equal(w_a, w_b)
    assert torch.equal(
        only_block1.model.layers[0].self_attn.q_proj.weight, _tiny("softpick").model.layers[0].self_attn.q_proj.weight
    )
