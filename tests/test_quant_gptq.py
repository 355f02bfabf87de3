"""GPTQ: solver quality against RTN on random layers, and whole-model calibration through the model's own attention."""

import copy
import itertools

import pytest
import torch

from softpick_bench.kernels import dispatch
from softpick_bench.models.tiny import build_model, tiny_llama_config
from softpick_bench.quant.apply import quantize
from softpick_bench.quant.base import QuantContext
from softpick_bench.quant.gptq import collect_hessians
from softpick_bench.quant.gptq_solver import gptq_quantize, gptq_reference, output_error
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


def _heavy_tailed_layer(seed: int, n_out: int, n_in: int, n: int = 1024):
    """Student-t (3 degrees of freedom) inputs with a few scaled-up features: LLM-like outliers."""
    torch.manual_seed(seed)
    x = torch.distributions.StudentT(3.0).sample((n, n_in)) @ (torch.randn(n_in, n_in) / n_in**0.5)
    x[:, torch.randperm(n_in)[:3]] *= 10
    return 0.05 * torch.randn(n_out, n_in), x, 2 * x.T @ x / n


@pytest.mark.parametrize(
    ("seed", "bits", "group_size", "symmetric", "act_order", "grid"),
    [
        (0, 2, 32, True, False, "full"),
        (1, 3, None, True, False, "full"),
        (2, 4, 32, False, False, "full"),
        (3, 4, 32, True, True, "full"),
        (4, 3, 48, True, False, "restricted"),  # groups that straddle the 64-column blocks
    ],
)
def test_fast_solver_matches_reference_on_heavy_tailed_layers(seed, bits, group_size, symmetric, act_order, grid):
    """Same per-layer output error as the plain column loop within 1% (seen: equal to ~1e-6), on the grid."""
    w, x, h = _heavy_tailed_layer(seed, 40, 192)
    args = (bits, group_size, symmetric, 0.01, act_order, 64, grid)
    ref, fast = gptq_reference(w, h, *args), gptq_quantize(w, h, *args)
    e_ref, e_fast = output_error(w, ref, x), output_error(w, fast, x)
    assert abs(e_fast - e_ref) <= 0.01 * e_ref, (e_fast, e_ref)
    assert torch.isclose(fast, ref, rtol=1e-4, atol=1e-7).float().mean() > 0.95  # same codes but for ties
    g = group_size or w.shape[1]
    for row in fast.reshape(-1, g):
        assert torch.unique(row).numel() <= 2**bits


@pytest.mark.parametrize(("group_size", "act_order"), [(16, False), (None, True)])
def test_triton_block_kernel_matches_reference(group_size, act_order):
    """The CUDA path's kernel, run by the Triton interpreter: rows not a multiple of its row tile, a last
    block narrower than the others, groups inside blocks, static per-column scales."""
    w, x, h = _heavy_tailed_layer(5, 20, 48, n=256)
    args = (3, group_size, True, 0.01, act_order, 32)
    ref = gptq_reference(w, h, *args)
    got = gptq_quantize(w, h, *args, use_triton=True)
    assert abs(output_error(w, got, x) - output_error(w, ref, x)) <= 1e-3 * output_error(w, ref, x)
    assert torch.isclose(got, ref, rtol=1e-4, atol=1e-7).float().mean() > 0.95


def test_layers_fed_one_input_share_one_hessian():
    """q/k/v share the normed hidden states and gate/up theirs: one Hessian each, equal to a per-layer sum."""
    model = _tiny("softpick")
    block = model.model.layers[0]
    seen: dict[str, list[torch.Tensor]] = {}
    handles = [
        m.register_forward_pre_hook(lambda _m, a, n=n: seen.setdefault(n, []).append(a[0].reshape(-1, a[0].shape[-1])))
        for n, m in block.named_modules()
        if isinstance(m, torch.nn.Linear)
    ]
    hidden = [(torch.randn(2, 16, 64), {}), (torch.randn(2, 16, 64), {})]
    rotary = model.model.rotary_emb(hidden[0][0], torch.arange(16)[None])
    inputs = [(hd, {"position_embeddings": rotary, "attention_mask": None}) for hd, _ in hidden]
    with torch.no_grad():
        for hd, kw in inputs:
            block(hd, **kw)
    for handle in handles:
        handle.remove()
    attn, mlp = block.self_attn, block.mlp
    with torch.no_grad():
        groups = collect_hessians(block, inputs, {"q": attn.q_proj, "k": attn.k_proj, "v": attn.v_proj})
        assert [names for names, _ in groups] == [["q", "k", "v"]]
        x = torch.cat(seen["self_attn.q_proj"])
        torch.testing.assert_close(groups[0][1], 2 * x.T @ x / x.shape[0])
        groups = collect_hessians(block, inputs, {"gate": mlp.gate_proj, "up": mlp.up_proj})
        assert [names for names, _ in groups] == [["gate", "up"]]
        x = torch.cat(seen["mlp.up_proj"])
        torch.testing.assert_close(groups[0][1], 2 * x.T @ x / x.shape[0])
    assert not any(m._forward_pre_hooks for m in block.modules())  # hooks removed


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
