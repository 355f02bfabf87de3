"""Every integer grid against a hand-computed one at 2, 3, 4 and 8 bits.

Known tensors are chosen so that the scale is exactly 1 (times a power of two per row), so
the hand-computed levels are integers and the round trip is exact in float32:
- symmetric full range (the field's convention, GPTQ reference quant.py): max|w| = (2^b - 1) / 2
  gives scale 2 max|w| / (2^b - 1) = 1 and the 2^b levels -2^(b-1) .. 2^(b-1) - 1;
- symmetric restricted: max|w| = 2^(b-1) - 1 gives scale 1 and the 2^b - 1 levels +-(2^(b-1) - 1);
- asymmetric (KV): min 0, max 2^b - 1 gives scale 1, zero point 0 and the levels 0 .. 2^b - 1.
"""

import pytest
import torch

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.quant.activations import fake_quantize_symmetric, per_token_scale
from softpick_bench.quant.apply import check_spec
from softpick_bench.quant.attention_quant import fake_quantize_asymmetric
from softpick_bench.quant.gptq_solver import gptq_quantize
from softpick_bench.quant.rtn import fake_quantize
from softpick_bench.quant.spec import QuantSpec

BITS = (2, 3, 4, 8)
ROW_SCALES = torch.tensor([1.0, 0.5, 2.0**-6])[:, None]  # powers of two: every product exact


def _full_levels(bits):
    return torch.arange(-(2 ** (bits - 1)), 2 ** (bits - 1), dtype=torch.float32)


def _restricted_levels(bits):
    m = 2 ** (bits - 1) - 1
    return torch.arange(-m, m + 1, dtype=torch.float32)


def _rows(base):
    return (ROW_SCALES * base[None, :]).float()


@pytest.mark.parametrize("bits", BITS)
def test_rtn_full_grid_has_all_2_to_the_b_levels(bits):
    m = (2**bits - 1) / 2
    levels = _full_levels(bits)
    # every level but the bottom one (|-2^(b-1)| > max), and +-max: max clips to the top level; -max sits
    # halfway between the two lowest codes and rounds to even, the bottom one
    base = torch.cat([levels[1:], torch.tensor([m, -m])])
    got = fake_quantize(_rows(base), bits, None, True)
    expected = torch.cat([levels[1:], torch.tensor([levels[-1], levels[0]])])
    torch.testing.assert_close(got, _rows(expected), rtol=0, atol=0)
    for row, s in zip(got, ROW_SCALES[:, 0]):
        assert torch.equal(torch.unique(row / s), levels)  # 2^b distinct levels
    # grouped: each group its own scale
    grouped = fake_quantize(torch.cat([_rows(base), 4 * _rows(base)], dim=1), bits, base.numel(), True)
    torch.testing.assert_close(grouped, torch.cat([_rows(expected), 4 * _rows(expected)], dim=1), rtol=0, atol=0)


@pytest.mark.parametrize("bits", BITS)
def test_rtn_restricted_grid_has_2_to_the_b_minus_1_levels(bits):
    levels = _restricted_levels(bits)
    halves, rounded = ([0.5, -0.5, 1.5], [0.0, 0.0, 2.0]) if bits > 2 else ([0.5, -0.5], [0.0, 0.0])  # to even
    base = torch.cat([levels, torch.tensor(halves)])
    got = fake_quantize(_rows(base), bits, None, True, "restricted")
    expected = torch.cat([levels, torch.tensor(rounded)])
    torch.testing.assert_close(got, _rows(expected), rtol=0, atol=0)
    for row, s in zip(got, ROW_SCALES[:, 0]):
        assert torch.equal(torch.unique(row / s), levels)
    assert levels.numel() == 2**bits - 1  # at 2 bits: the ternary {-1, 0, 1}


def _heavy_layer(seed, n_out=24, n_in=64, n=512):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # StudentT samples from the global generator
    x = torch.distributions.StudentT(3.0).sample((n, n_in))
    w = 0.05 * torch.randn(n_out, n_in, generator=g)
    return w, 2 * x.T @ x / n


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("act_order,group", [(False, None), (True, 16)])
def test_gptq_codes_lie_on_the_full_grid(bits, act_order, group):
    """Static scales (per channel, or act-order groups) come from the original weights: every output
    value is k * 2 max|w| / (2^b - 1) for an integer k in [-2^(b-1), 2^(b-1) - 1]."""
    w, h = _heavy_layer(bits)
    q = gptq_quantize(w, h, bits, group, True, act_order=act_order)
    g = group or w.shape[1]
    scale = 2 * w.reshape(w.shape[0], -1, g).abs().amax(-1, keepdim=True) / (2**bits - 1)
    k = q.reshape(w.shape[0], -1, g) / scale
    torch.testing.assert_close(k, torch.round(k), rtol=0, atol=1e-4)
    assert k.min() >= -(2 ** (bits - 1)) - 1e-4 and k.max() <= 2 ** (bits - 1) - 1 + 1e-4
    if bits == 2:  # error feedback reaches the 4th level, the one a restricted grid lacks
        assert set(torch.round(k).unique().tolist()) == {-2.0, -1.0, 0.0, 1.0}


@pytest.mark.parametrize("bits", BITS)
def test_gptq_restricted_grid_codes(bits):
    w, h = _heavy_layer(bits + 10)
    q = gptq_quantize(w, h, bits, None, True, grid="restricted")
    scale = w.abs().amax(-1, keepdim=True) / (2 ** (bits - 1) - 1)
    k = q / scale
    torch.testing.assert_close(k, torch.round(k), rtol=0, atol=1e-4)
    assert k.abs().max() <= 2 ** (bits - 1) - 1 + 1e-4


@pytest.mark.parametrize("bits", BITS)
def test_activation_grid_is_the_restricted_int_grid(bits):
    """Per-token activations keep the int-GEMM convention scale max|x| / (2^(b-1) - 1) (see activations.py)."""
    levels = _restricted_levels(bits)
    halves, rounded = ([0.5, 1.5], [0.0, 2.0]) if bits > 2 else ([0.5], [0.0])  # halves round to even
    x = _rows(torch.cat([levels, torch.tensor(halves)]))
    got = fake_quantize_symmetric(x, bits, per_token_scale(x, bits))
    expected = _rows(torch.cat([levels, torch.tensor(rounded)]))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # a static (clipped) scale: beyond the threshold the one extra negative code is used, as int8 kernels do
    clipped = fake_quantize_symmetric(torch.tensor([-1e3, 1e3]), bits, torch.tensor(1.0))
    assert clipped.tolist() == [-(2 ** (bits - 1)), 2 ** (bits - 1) - 1]


@pytest.mark.parametrize("bits", BITS)
def test_kv_grid_is_asymmetric_with_2_to_the_b_levels(bits):
    levels = torch.arange(0, 2**bits, dtype=torch.float32)
    x = _rows(torch.cat([levels, torch.tensor([0.5, 2.5])]))[None, None]  # (1, 1, rows, d): per token
    got = fake_quantize_asymmetric(x, bits, (-1,))
    expected = _rows(torch.cat([levels, torch.tensor([0.0, 2.0])]))[None, None]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_grid_option_in_spec_label_json_and_refused_where_meaningless():
    full, restricted = QuantSpec("rtn", 4, 64), QuantSpec("rtn", 4, 64, grid="restricted")
    assert '"grid":"full"' in full.to_json() and full.label() == "rtn-w4-g64"
    assert restricted.label() == "rtn-w4-g64-restricted" and restricted.to_json() != full.to_json()
    assert QuantSpec.from_dict(restricted.to_dict()) == restricted
    with pytest.raises(ValueError, match="unknown grid"):
        QuantSpec("rtn", 4, grid="half")
    with pytest.raises(ValueError, match="symmetric"):
        QuantSpec("rtn", 4, symmetric=False, grid="restricted")
    check_spec(QuantSpec("gptq", 4, 64, grid="restricted"), "cpu")
    with pytest.raises(UnsupportedQuantError, match="bnb has no 'restricted' grid"):
        check_spec(QuantSpec("bnb", 4, grid="restricted"), "cuda")
