"""Round-to-nearest fake quantization against a plain reference."""

import pytest
import torch
from torch import nn

from softpick_bench.errors import QuantizationNoOpError
from softpick_bench.quant.apply import quantize
from softpick_bench.quant.base import QuantContext
from softpick_bench.quant.rtn import effective_bits, fake_quantize
from softpick_bench.quant.spec import QuantSpec


def _loop_reference(w, bits, group, symmetric, grid="full"):
    """Group by group, value by value, in float32 as the implementation (so that exact ties, e.g. the
    full grid's -max|x| halfway between its two lowest codes, round the same way)."""
    out = torch.empty_like(w)
    g = group or w.shape[1]
    for r in range(w.shape[0]):
        for c0 in range(0, w.shape[1], g):
            x = w[r, c0 : c0 + g].float()
            if symmetric and grid == "restricted":
                qmax = 2 ** (bits - 1) - 1
                s = x.abs().max().clamp_min(1e-12) / qmax
                out[r, c0 : c0 + g] = torch.clamp(torch.round(x / s), -qmax - 1, qmax) * s
            elif symmetric:  # GPTQ reference convention: codes 0..2^b-1 around the midpoint 2^(b-1)
                maxq = 2**bits - 1
                s = 2 * x.abs().max().clamp_min(1e-12) / maxq
                z = 2 ** (bits - 1)
                out[r, c0 : c0 + g] = (torch.clamp(torch.round(x / s) + z, 0, maxq) - z) * s
            else:
                qmax = 2**bits - 1
                s = (x.max() - x.min()).clamp_min(1e-12) / qmax
                z = torch.round(-x.min() / s)
                out[r, c0 : c0 + g] = (torch.clamp(torch.round(x / s) + z, 0, qmax) - z) * s
    return out


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize(
    "group,symmetric,grid",
    [(None, True, "full"), (16, True, "full"), (16, True, "restricted"), (16, False, "full"), (None, False, "full")],
)
def test_fake_quantize_matches_loop_reference(bits, group, symmetric, grid):
    w = torch.randn(6, 64, generator=torch.Generator().manual_seed(bits), dtype=torch.float64)
    got = fake_quantize(w, bits, group, symmetric, grid)
    torch.testing.assert_close(got, _loop_reference(w, bits, group, symmetric, grid), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("group,symmetric", [(None, True), (32, True), (32, False)])
def test_error_falls_with_bits_and_is_never_zero(group, symmetric):
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    errors = [float((fake_quantize(w, b, group, symmetric) - w).norm() / w.norm()) for b in range(2, 9)]
    assert all(e > 0 for e in errors), errors
    assert all(a > b for a, b in zip(errors, errors[1:])), errors


def test_effective_bits_counts_scales():
    assert effective_bits(4, 128, 64, True) == 4 + 16 / 64
    assert effective_bits(4, 128, 64, False) == 4 + 32 / 64
    assert effective_bits(3, 256, None, True) == 3 + 16 / 256


def _model():
    torch.manual_seed(0)
    return nn.ModuleDict({"embed_tokens": nn.Embedding(10, 32), "proj": nn.Linear(32, 32), "lm_head": nn.Linear(32, 10)})


def test_report_proves_quantization_and_respects_skip():
    model = _model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = quantize(model, QuantSpec(method="rtn", bits=4), QuantContext())
    assert (report.layers_quantized, report.layers_total) == (1, 3)
    assert report.skipped_layers == ["embed_tokens", "lm_head"]
    assert report.mean_rel_weight_error > 0
    assert torch.equal(model["lm_head"].weight, before["lm_head.weight"])
    assert not torch.equal(model["proj"].weight, before["proj.weight"])


def test_skipping_everything_is_an_error():
    spec = QuantSpec(method="rtn", bits=4, skip=("embed_tokens", "lm_head", "proj"))
    with pytest.raises(QuantizationNoOpError, match="no layer was quantized"):
        quantize(_model(), spec, QuantContext())


def test_spec_is_frozen_and_canonical():
    a = QuantSpec(method="rtn", bits=4, options={"b": 1, "a": 2})
    b = QuantSpec(method="rtn", bits=4, options=(("a", 2), ("b", 1)))
    assert a == b and hash(a) == hash(b) and a.to_json() == b.to_json()
    assert QuantSpec.from_dict(a.to_dict()) == a
    with pytest.raises(AttributeError):
        a.bits = 3
