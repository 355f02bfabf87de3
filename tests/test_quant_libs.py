"""HQQ and bitsandbytes backends: real library modules, errors that fall with bits, declared limits."""

import itertools

import pytest
import torch
from torch import nn

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.quant.apply import check_spec, quantize
from softpick_bench.quant.base import QuantContext, get_backend
from softpick_bench.quant.spec import QuantSpec

pytest.importorskip("hqq")
pytest.importorskip("bitsandbytes")


class OneLayer(nn.Module):
    """A model of a single random linear layer, so backends see a named target."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.proj = nn.Linear(256, 128, bias=False)


def _output_error(spec: QuantSpec) -> tuple[float, nn.Module, object]:
    model = OneLayer()
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model.proj(x)
        report = get_backend(spec.method).apply(model, spec, QuantContext())
        out = model.proj(x)
    return float((out - ref).norm() / ref.norm()), model, report


def test_hqq_error_falls_as_bits_rise():
    errors = []
    for bits in (1, 2, 3, 4, 5, 6, 8):
        err, model, report = _output_error(QuantSpec("hqq", bits, 64, symmetric=False))
        assert type(model.proj).__name__ == "HQQLinear"
        assert report.layers_quantized == 1 and report.mean_rel_weight_error > 0
        assert report.effective_bits == pytest.approx(bits + 32 / 64)
        errors.append(err)
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert errors[-1] > 0


def test_bnb_error_falls_from_4_to_8_bits():
    nf4, model4, report4 = _output_error(QuantSpec("bnb", 4, options={"quant_type": "nf4"}))
    fp4, _, _ = _output_error(QuantSpec("bnb", 4, options={"quant_type": "fp4", "double_quant": True}))
    int8, model8, report8 = _output_error(QuantSpec("bnb", 8, options={"threshold": 6.0}))
    int8_all, _, _ = _output_error(QuantSpec("bnb", 8, options={"threshold": 0.0}))
    assert type(model4.proj).__name__ == "Linear4bit" and type(model8.proj).__name__ == "Linear8bitLt"
    assert min(nf4, fp4) > max(int8, int8_all) > 0
    assert nf4 < fp4  # nf4's grid fits normally distributed weights better
    assert report4.effective_bits == pytest.approx(4 + 32 / 64)
    assert report8.effective_bits == pytest.approx(8 + 32 / 256)
    assert 0 < report8.mean_rel_weight_error < report4.mean_rel_weight_error


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (QuantSpec("hqq", 7, 64, symmetric=False), "no 7-bit mode"),
        (QuantSpec("hqq", 4, 64, symmetric=True), "zero point"),
        (QuantSpec("bnb", 3), "no 3-bit mode"),
        (QuantSpec("bnb", 4, 64), "group size"),
        (QuantSpec("bnb", 8, options={"quant_type": "nf4"}), "no option"),
        (QuantSpec("bnb", 4, options={"quant_type": "int4"}), "quant_type"),
    ],
)
def test_impossible_cells_are_refused_with_the_reason(spec, reason):
    with pytest.raises(UnsupportedQuantError, match=reason):
        check_spec(spec, "cpu")


def test_library_backends_quantize_a_model_and_keep_skips():
    from softpick_bench.models.tiny import build_model, tiny_llama_config

    config = tiny_llama_config(hidden=64, heads=4, kv_heads=2, intermediate=128, layers=1)
    for spec in (QuantSpec("hqq", 4, 32, symmetric=False), QuantSpec("bnb", 4), QuantSpec("bnb", 8)):
        model = build_model(config, "softpick")
        report = quantize(model, spec, QuantContext())
        assert report.layers_quantized == 7 and report.skipped_layers == ["model.embed_tokens", "lm_head"]
        assert isinstance(model.lm_head, nn.Linear) and type(model.lm_head) is nn.Linear
        assert torch.isfinite(model(torch.tensor([[5, 6, 7]])).logits).all()
