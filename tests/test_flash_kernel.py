"""Flash kernel (Triton) against the reference, forward and backward.

On a machine without CUDA these run in the Triton interpreter (conftest sets
TRITON_INTERPRET=1) in float32 on small shapes with small tiles, so every code path
(several key/query blocks, diagonal blocks, partial blocks, GQA loops) is exercised.
Every buffer the kernels write is NaN-poisoned first. Tolerances are relative
Frobenius errors: 1e-4 in float32 (seen ~1e-6), 1e-2 for float16 outputs.

Gradients also pass when their root-mean-square error is under 1e-5: the kernel treats
the shift c = max(0, rowmax) as a constant, while autograd through the reference also
differentiates the eps * e^c term through the max (size eps / (l + eps) times Delta on
the argmax key). That term dominates only when the true gradient cancels to ~1e-6, e.g.
a row that sees a single key (softpick weight 1 - O(eps)).
"""

from __future__ import annotations

import random

import pytest
import torch

from softpick_bench.kernels import reference
from softpick_bench.kernels.dispatch import plan_mask, triton_attention
from softpick_bench.kernels.flash import (
    FWD_VARIANTS,
    FlashConfig,
    UnsupportedAttentionError,
    flash_attention,
    set_config_override,
    set_poison,
)

# Interpreter tests: float32 tolerances that a GPU's tf32 dots would not meet; tests/gpu covers CUDA.
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests; GPU checks live in tests/gpu")
DEVICE = "cpu"
TOL32 = 1e-4
SMALL = FlashConfig(fwd_m=16, fwd_n=16, kv_m=16, kv_n=16, dq_m=16, dq_n=16, fwd_warps=2, kv_warps=2, dq_warps=2)


@pytest.fixture(autouse=True)
def _small_tiles_and_poison():
    set_config_override(SMALL)
    set_poison(True)
    yield
    set_config_override(None)
    set_poison(False)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert torch.isfinite(a).all(), "non-finite values (an element never written?)"
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def rand_qkv(b, hq, hkv, q_len, k_len, d, dtype=torch.float32, spread=1.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, q_len, d, generator=g) * spread
    k = torch.randn(b, hkv, k_len, d, generator=g) * spread
    v = torch.randn(b, hkv, k_len, d, generator=g)
    return [x.to(DEVICE, dtype) for x in (q, k, v)]


def check_fwd_bwd(q, k, v, kind, *, ref_mask=None, causal=False, tol=TOL32, **kw):
    """Run kernel and float64 reference, compare out and dq, dk, dv."""
    qf, kf, vf = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out = flash_attention(qf, kf, vf, kind=kind, causal=causal, **kw)
    do = torch.randn_like(out)
    out.backward(do)
    qr, kr, vr = (x.detach().double().requires_grad_() for x in (q, k, v))
    ref = reference.attention(qr, kr, vr, kind=kind, mask=ref_mask, causal=causal)
    ref.backward(do.double())
    errs = {"out": rel(out, ref), "dq": grad_err(qf.grad, qr.grad), "dk": grad_err(kf.grad, kr.grad),
            "dv": grad_err(vf.grad, vr.grad)}
    assert all(e <= tol for e in errs.values()), errs


def grad_err(g: torch.Tensor, ref: torch.Tensor, rms_floor: float = 1e-5) -> float:
    """Relative error, or 0 when the root-mean-square error is below `rms_floor` (module docstring)."""
    rms = ((g.double() - ref.double()).norm() / ref.numel() ** 0.5).item()
    return 0.0 if rms <= rms_floor else rel(g, ref)


@pytest.mark.parametrize("kind", reference.NORMALIZATIONS)
@pytest.mark.parametrize("causal", [True, False])
def test_kinds_match_reference(kind, causal):
    q, k, v = rand_qkv(2, 4, 2, 37, 37, 32, seed=hash((kind, causal)) % 1000)
    check_fwd_bwd(q, k, v, kind, causal=causal)


FUZZ = [random.Random(i) for i in range(8)]


@pytest.mark.parametrize("rng", FUZZ, ids=[f"seed{i}" for i in range(8)])
def test_fuzz_shapes(rng):
    """Random lengths (decode Q=1, Q<K, Q>K), head dims incl. non powers of two, GQA/MQA."""
    hkv = rng.choice([1, 2])
    hq = hkv * rng.choice([1, 2, 3])
    q_len = rng.choice([1, 5, 16, 23, 40])
    k_len = rng.choice([q_len, q_len + rng.randint(1, 30), max(1, q_len - 4)])
    d = rng.choice([16, 24, 32])
    causal = rng.random() < 0.6
    q, k, v = rand_qkv(rng.choice([1, 2]), hq, hkv, q_len, k_len, d, seed=rng.randint(0, 10**6))
    check_fwd_bwd(q, k, v, "softpick", causal=causal)


@pytest.mark.parametrize("causal", [True, False])
def test_key_padding_ranges(causal):
    """Per-batch valid key ranges (left and right padding), as the fast padded path sees them."""
    b, q_len, k_len = 3, 20, 35
    q, k, v = rand_qkv(b, 4, 2, q_len, k_len, 32, seed=7)
    ks = torch.tensor([0, 9, 3])
    ke = torch.tensor([35, 35, 17])
    pos = torch.arange(k_len)
    keep = (pos >= ks[:, None]) & (pos < ke[:, None])
    check_fwd_bwd(q, k, v, "softpick", causal=causal, ref_mask=keep[:, None, None, :].to(DEVICE),
                  key_start=ks.to(DEVICE), key_end=ke.to(DEVICE))


@pytest.mark.parametrize("kind", ["softpick", "softmax"])
def test_dense_mask(kind):
    """Arbitrary boolean mask, per head, with fully masked rows: read tile by tile."""
    b, hq, q_len, k_len = 2, 2, 21, 27
    q, k, v = rand_qkv(b, hq, 1, q_len, k_len, 16, seed=11)
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(b, hq, q_len, k_len, generator=g) < 0.6
    mask[0, 1, 4] = False
    mask = mask.to(DEVICE)
    check_fwd_bwd(q, k, v, kind, causal=True, ref_mask=mask, mask=mask)


def test_varlen_packed():
    """Packed sequences with cumulative offsets; bottom-right causal per sequence."""
    q_lens, k_lens = [5, 17, 1, 30], [5, 25, 9, 30]
    hq, hkv, d = 4, 2, 32
    cu_q = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    cu_k = torch.tensor([0, *torch.tensor(k_lens).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    g = torch.Generator().manual_seed(5)
    q = (torch.randn(sum(q_lens), hq, d, generator=g) * 1.5).to(DEVICE).requires_grad_()
    k = (torch.randn(sum(k_lens), hkv, d, generator=g) * 1.5).to(DEVICE).requires_grad_()
    v = torch.randn(sum(k_lens), hkv, d, generator=g).to(DEVICE).requires_grad_()
    out = flash_attention(q, k, v, causal=True, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    do = torch.randn_like(out)
    out.backward(do)
    for i in range(len(q_lens)):
        qs, ks = slice(cu_q[i].item(), cu_q[i + 1].item()), slice(cu_k[i].item(), cu_k[i + 1].item())
        qi, ki, vi = (x.detach()[s].double().transpose(0, 1)[None].requires_grad_() for x, s in ((q, qs), (k, ks), (v, ks)))
        ref = reference.attention(qi, ki, vi, causal=True)
        ref.backward(do[qs].double().transpose(0, 1)[None])
        assert rel(out[qs].transpose(0, 1)[None], ref) <= TOL32
        assert grad_err(q.grad[qs].transpose(0, 1)[None], qi.grad) <= TOL32
        assert grad_err(k.grad[ks].transpose(0, 1)[None], ki.grad) <= TOL32
        assert grad_err(v.grad[ks].transpose(0, 1)[None], vi.grad) <= TOL32


VARIANT_CFGS = {name: FlashConfig(**{**SMALL.__dict__, **flags, "fwd_maxnreg": 128 if flags else None})
                for name, flags in FWD_VARIANTS.items()}


@pytest.mark.parametrize("variant", list(VARIANT_CFGS))
@pytest.mark.parametrize("kind", reference.NORMALIZATIONS)
def test_forward_variants(variant, kind):
    """Each forward version (tensor descriptors, lazy rescaling, zeroed masked scores) on causal
    blocks with ragged ends, left/right key padding, GQA and large scores (frequent max growth)."""
    set_config_override(VARIANT_CFGS[variant])
    b, q_len, k_len = 2, 29, 45
    q, k, v = rand_qkv(b, 4, 2, q_len, k_len, 32, spread=3.0, seed=13)
    ks, ke = torch.tensor([0, 6]), torch.tensor([45, 38])
    pos = torch.arange(k_len)
    keep = ((pos >= ks[:, None]) & (pos < ke[:, None]))[:, None, None, :]
    check_fwd_bwd(q, k, v, kind, causal=True, ref_mask=keep, key_start=ks, key_end=ke)
    check_fwd_bwd(q, k, v, kind, causal=False, ref_mask=keep, key_start=ks, key_end=ke)


@pytest.mark.parametrize("variant", ["v3", "v3-lazy"])
def test_forward_variants_varlen_and_mask(variant):
    set_config_override(VARIANT_CFGS[variant])
    q, k, v = rand_qkv(2, 2, 1, 21, 27, 16, seed=17)
    mask = (torch.rand(2, 2, 21, 27, generator=torch.Generator().manual_seed(4)) < 0.6)
    check_fwd_bwd(q, k, v, "softpick", causal=True, ref_mask=mask, mask=mask)
    test_varlen_packed()


def test_float16_forward():
    q, k, v = rand_qkv(1, 2, 2, 33, 33, 32, dtype=torch.float16)
    out = flash_attention(q, k, v, causal=True)
    ref = reference.attention(q.double(), k.double(), v.double(), causal=True)
    assert out.dtype == torch.float16
    assert rel(out, ref) <= 1e-2


def test_degenerate_rows_are_exact_zeros():
    """All-negative rows and rows that see no key give exact zeros; huge scores do not overflow."""
    q, _, v = rand_qkv(1, 1, 1, 16, 16, 16)
    k_neg = -q.detach().clone()  # q.k < 0 on the diagonal, mostly negative elsewhere
    out = flash_attention(q, k_neg, v, causal=True, scale=100.0)
    ref = reference.attention(q.double(), k_neg.double(), v.double(), causal=True, scale=100.0)
    assert rel(out, ref) <= TOL32 or ref.abs().max() == 0
    assert (out[0, 0, 0] == 0).all()  # row 0 sees only its own (negative) score
    # Q > K with bottom-right alignment: the first Q - K rows see no key at all.
    q2, k2, v2 = rand_qkv(1, 1, 1, 20, 8, 16, seed=2)
    out2 = flash_attention(q2, k2, v2, causal=True, scale=30.0)
    assert (out2[0, 0, :12] == 0).all()
    ref2 = reference.attention(q2.double(), k2.double(), v2.double(), causal=True, scale=30.0)
    assert rel(out2, ref2) <= TOL32


def sdpa_like_mask(b, q_len, k_len, pad_left):
    """What transformers' sdpa_mask builds: bottom-right causal AND key padding."""
    keep = torch.ones(b, k_len, dtype=torch.bool)
    for i, p in enumerate(pad_left):
        keep[i, :p] = False
    return (reference.causal_mask(q_len, k_len)[None] & keep[:, None, :])[:, None]


def test_plan_recognises_sdpa_masks():
    m = sdpa_like_mask(3, 6, 10, [0, 2, 5])
    plan = plan_mask(m, 3, 4, 6, 10, causal=False)
    assert plan.causal and plan.dense_mask is None
    assert plan.key_start.tolist() == [0, 2, 5] and plan.key_end.tolist() == [10, 10, 10]
    pad = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    pad[1, ..., 5:] = False
    plan = plan_mask(pad, 2, 4, 3, 7, causal=False)
    assert not plan.causal and plan.key_end.tolist() == [7, 5]
    odd = sdpa_like_mask(1, 6, 6, [0]).clone()
    odd[0, 0, 5, 1] = False  # a hole: not a key range
    assert plan_mask(odd, 1, 4, 6, 6, causal=False).dense_mask is not None


@pytest.mark.parametrize("q_len", [9, 1])
def test_triton_attention_with_sdpa_mask(q_len):
    """The dispatch kernel path against the reference, prefill and KV-cache decoding."""
    b, k_len = 3, 24
    q, k, v = rand_qkv(b, 4, 2, q_len, k_len, 32, seed=q_len)
    mask = sdpa_like_mask(b, q_len, k_len, [0, 3, 11]).to(DEVICE)
    out = triton_attention(q, k, v, "softpick", mask, 32**-0.5)
    ref = reference.attention(q.double(), k.double(), v.double(), mask=mask)
    assert rel(out, ref) <= TOL32
    holes = mask.clone()
    holes[..., 5] = False
    out = triton_attention(q, k, v, "softpick", holes, 32**-0.5)
    assert rel(out, reference.attention(q.double(), k.double(), v.double(), mask=holes)) <= TOL32


def test_rejects_bad_inputs():
    q, k, v = rand_qkv(1, 3, 2, 8, 8, 16)
    with pytest.raises(UnsupportedAttentionError, match="multiple"):
        flash_attention(q, k, v)
    q, k, v = rand_qkv(1, 2, 2, 8, 8, 16)
    with pytest.raises(UnsupportedAttentionError, match="kind"):
        flash_attention(q, k, v, kind="sparsemax")
    with pytest.raises(UnsupportedAttentionError, match="boolean"):
        flash_attention(q, k, v, mask=torch.ones(8, 8, device=DEVICE))
