"""The softpick reference against a float64 brute force of the paper's definition."""

import math

import pytest
import torch

from softpick_bench.kernels import reference

EPS = reference.SOFTPICK_EPS


def brute_softpick(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Element-by-element loops in float64: ReLU(e^x - 1) / (sum_valid |e^x - 1| + eps * e^c),

    c = max(0, max valid x): the eps placement the safe form implies (it scales eps by e^-c).
    """
    out = torch.zeros_like(x, dtype=torch.float64)
    rows = x.reshape(-1, x.shape[-1]).double()
    masks = mask.expand_as(x).reshape(-1, x.shape[-1])
    flat = out.view(-1, x.shape[-1])
    for r in range(rows.shape[0]):
        valid = [j for j in range(rows.shape[1]) if masks[r, j]]
        if not valid:
            continue
        c = max(0.0, max(float(rows[r, j]) for j in valid))
        denom = sum(abs(math.exp(float(rows[r, j])) - 1) for j in valid) + EPS * math.exp(c)
        for j in valid:
            flat[r, j] = max(math.exp(float(rows[r, j])) - 1, 0.0) / denom
    return out


@pytest.mark.parametrize("seed", range(4))
def test_softpick_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 17, generator=g, dtype=torch.float64) * 3
    mask = torch.rand(3, 5, 17, generator=g) > 0.3
    mask[0, 0] = False  # a fully masked row
    mask[1, 2, :] = True
    got = reference.softpick(x, mask)
    torch.testing.assert_close(got, brute_softpick(x, mask), rtol=1e-12, atol=1e-14)
    assert torch.all(got[0, 0] == 0)
    assert torch.all(got >= 0) and torch.all(got.sum(-1) <= 1 + 1e-12)


def test_masked_entries_excluded_from_denominator():
    x = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    with_masked = reference.softpick(x, torch.tensor([[True, False, True]]))
    only_valid = reference.softpick(x[:, [0, 2]])
    torch.testing.assert_close(with_masked[:, [0, 2]], only_valid)
    assert with_masked[0, 1] == 0


def test_all_negative_row_is_zero_without_overflow():
    x = torch.full((2, 8), -200.0)  # exp(200) would overflow float32 with the plain max shift
    out = reference.softpick(x)
    assert torch.all(out == 0) and torch.isfinite(out).all()


def test_float32_matches_float64_on_large_scores():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 64, generator=g, dtype=torch.float64) * 30
    got = reference.softpick(x.float())
    torch.testing.assert_close(got.double(), reference.softpick(x), rtol=1e-4, atol=1e-7)


def test_boolean_mask_required():
    with pytest.raises(TypeError, match="boolean"):
        reference.softpick(torch.zeros(2, 3), torch.zeros(2, 3))


def _brute_attention(q, k, v, mask, kind="softpick"):
    b, hq, ql, d = q.shape
    group = hq // k.shape[1]
    out = torch.zeros(b, hq, ql, d, dtype=torch.float64)
    for h in range(hq):
        kh, vh = k[:, h // group].double(), v[:, h // group].double()
        s = q[:, h].double() @ kh.transpose(-1, -2) / math.sqrt(d)
        m = mask[:, 0] if mask.dim() == 4 else mask
        w = brute_softpick(s, m) if kind == "softpick" else None
        out[:, h] = w @ vh
    return out


@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2), (4, 1)])  # MHA, GQA, MQA
def test_attention_padding_and_gqa(hq, hkv):
    g = torch.Generator().manual_seed(hq * 10 + hkv)
    b, q_len, k_len, d = 3, 6, 6, 8
    q = torch.randn(b, hq, q_len, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, hkv, k_len, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, hkv, k_len, d, generator=g, dtype=torch.float64)
    valid = torch.ones(b, k_len, dtype=torch.bool)
    valid[1, :2] = False  # left padding
    valid[2, -3:] = False  # right padding
    mask = (valid[:, None, None, :] & reference.causal_mask(q_len, k_len)).expand(b, 1, q_len, k_len)
    got = reference.attention(q, k, v, "softpick", mask=mask)
    torch.testing.assert_close(got, _brute_attention(q, k, v, mask), rtol=1e-10, atol=1e-12)
    assert torch.all(got[1, :, :2] == 0)  # left-padded queries see nothing


def test_causal_mask_is_bottom_right_aligned():
    m = reference.causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
