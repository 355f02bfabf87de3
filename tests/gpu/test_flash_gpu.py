"""GPU checks of the flash kernel in bf16.

Outputs against a float32 reference: relative Frobenius error <= 1e-2. Gradients of
q, k, v against autograd through the float32 reference: <= 2e-2. Fresh random inputs
for every check; every buffer the kernels write is NaN-poisoned before each run. The
backward is checked to be deterministic: two runs give bit-identical gradients.
"""

from __future__ import annotations

import pytest
import torch

from softpick_bench.kernels import dispatch, reference
from softpick_bench.kernels.flash import default_config, flash_attention, set_config_override, set_poison

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
OUT_TOL, GRAD_TOL = 1e-2, 2e-2


@pytest.fixture(autouse=True)
def _poison():
    set_poison(True)
    yield
    set_poison(False)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert torch.isfinite(a).all(), "non-finite values (an element never written?)"
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def qkv(b, hq, hkv, q_len, k_len, d, dtype=torch.bfloat16):
    q = torch.randn(b, hq, q_len, d, device="cuda") * 1.5
    k = torch.randn(b, hkv, k_len, d, device="cuda") * 1.5
    v = torch.randn(b, hkv, k_len, d, device="cuda")
    return [x.to(dtype) for x in (q, k, v)]


def check(q, k, v, kind="softpick", causal=True, ref_mask=None, **kw):
    qb, kb, vb = (x.detach().clone().requires_grad_() for x in (q, k, v))
    out = flash_attention(qb, kb, vb, kind=kind, causal=causal, **kw)
    do = torch.randn_like(out)
    out.backward(do)
    qr, kr, vr = (x.detach().float().requires_grad_() for x in (q, k, v))
    ref = reference.attention(qr, kr, vr, kind=kind, causal=causal, mask=ref_mask)
    ref.backward(do.float())
    errs = {"out": rel(out, ref), "dq": rel(qb.grad, qr.grad), "dk": rel(kb.grad, kr.grad), "dv": rel(vb.grad, vr.grad)}
    assert errs["out"] <= OUT_TOL and max(errs["dq"], errs["dk"], errs["dv"]) <= GRAD_TOL, errs
    return errs


SHAPES = [  # b, hq, hkv, q_len, k_len, d
    (2, 4, 4, 256, 256, 64),
    (2, 4, 4, 300, 300, 128),
    (1, 8, 2, 1000, 1000, 128),  # GQA, lengths not multiples of the tiles
    (1, 8, 1, 513, 513, 64),  # MQA
    (2, 4, 2, 77, 333, 64),  # Q < K (chunked prefill with a cache)
    (2, 2, 2, 200, 200, 32),
    (2, 2, 2, 200, 200, 96),
    (1, 2, 2, 200, 200, 256),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("causal", [True, False])
def test_bf16_softpick(shape, causal):
    check(*qkv(*shape), causal=causal)


@pytest.mark.parametrize("kind", reference.NORMALIZATIONS)
def test_bf16_kinds(kind):
    check(*qkv(2, 4, 2, 384, 384, 64), kind=kind)


def test_fp16():
    check(*qkv(2, 4, 2, 384, 384, 128, dtype=torch.float16))


def test_padded_keys():
    q, k, v = qkv(3, 4, 2, 260, 260, 64)
    ks = torch.tensor([0, 40, 7], device="cuda")
    ke = torch.tensor([260, 260, 150], device="cuda")
    pos = torch.arange(260, device="cuda")
    keep = ((pos >= ks[:, None]) & (pos < ke[:, None]))[:, None, None, :]
    check(q, k, v, ref_mask=keep, key_start=ks, key_end=ke)


def test_dense_mask():
    q, k, v = qkv(2, 4, 2, 190, 230, 64)
    mask = torch.rand(2, 4, 190, 230, device="cuda") < 0.7
    check(q, k, v, causal=False, ref_mask=mask, mask=mask)


def test_varlen():
    lens = [130, 7, 400, 64, 1]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    t = sum(lens)
    q = (torch.randn(t, 8, 128, device="cuda") * 1.5).bfloat16().requires_grad_()
    k = (torch.randn(t, 2, 128, device="cuda") * 1.5).bfloat16().requires_grad_()
    v = torch.randn(t, 2, 128, device="cuda").bfloat16().requires_grad_()
    out = flash_attention(q, k, v, causal=True, cu_seqlens_q=cu, cu_seqlens_k=cu)
    do = torch.randn_like(out)
    out.backward(do)
    refs = {"out": [], "dq": [], "dk": [], "dv": []}
    for i in range(len(lens)):  # one reference per sequence, compared over the whole packed tensor
        s = slice(cu[i].item(), cu[i + 1].item())
        qi, ki, vi = (x.detach()[s].float().requires_grad_() for x in (q, k, v))
        ref = reference.attention(*(x.transpose(0, 1)[None] for x in (qi, ki, vi)), causal=True)
        ref.backward(do[s].float().transpose(0, 1)[None])
        for name, t in (("out", ref[0].transpose(0, 1)), ("dq", qi.grad), ("dk", ki.grad), ("dv", vi.grad)):
            refs[name].append(t)
    assert rel(out, torch.cat(refs["out"])) <= OUT_TOL
    for name, g in (("dq", q.grad), ("dk", k.grad), ("dv", v.grad)):
        assert rel(g, torch.cat(refs[name])) <= GRAD_TOL, name


@pytest.mark.parametrize("k_len", [4096, 1000])
def test_decode(k_len):
    """One query against a cache, with left padding, through the dispatch path."""
    q, k, v = qkv(4, 16, 4, 1, k_len, 128)
    pad = torch.tensor([0, 13, 500, 999], device="cuda")
    keep = torch.arange(k_len, device="cuda")[None, :] >= pad[:, None]
    mask = keep[:, None, None, :]
    out = dispatch.attention_forward(q, k, v, "softpick", mask, 128**-0.5)
    ref = reference.attention(q.float(), k.float(), v.float(), mask=mask)
    assert rel(out, ref) <= OUT_TOL


def _fwd_candidates():
    """Every new forward candidate the benchmark may choose (benchmarks/attention.py; v2 rows are the
    previous kernel, checked by the tests above at its tiles)."""
    from benchmarks.attention import FWD_CANDIDATES
    return [(d, c) for d, cands in FWD_CANDIDATES.items() for c in cands if c[0] != "v2"]


@pytest.mark.parametrize("cand", _fwd_candidates(), ids=lambda dc: f"d{dc[0]}-" + "-".join(map(str, dc[1])))
def test_forward_candidates(cand):
    """Each forward version and tile config of the benchmark sweep: causal with ragged lengths and
    GQA, left/right key padding, softmax too (lazy rescaling applies to every kind), fp16."""
    from benchmarks.attention import fwd_candidate_config

    d, c = cand
    cfg = fwd_candidate_config(default_config(d, 1024), c)
    set_config_override(cfg)
    try:
        check(*qkv(1, 8, 2, 1000, 1000, d))
        check(*qkv(2, 4, 4, 77, 333, d), causal=False)
        q, k, v = qkv(3, 4, 2, 260, 260, d)
        ks = torch.tensor([0, 40, 7], device="cuda")
        ke = torch.tensor([260, 260, 150], device="cuda")
        pos = torch.arange(260, device="cuda")
        keep = ((pos >= ks[:, None]) & (pos < ke[:, None]))[:, None, None, :]
        check(q, k, v, ref_mask=keep, key_start=ks, key_end=ke)
        check(*qkv(2, 4, 2, 384, 384, d), kind="softmax")
        check(*qkv(2, 4, 2, 384, 384, d, dtype=torch.float16))
    finally:
        set_config_override(None)


def _token_logprobs(model, ids, attn):
    logits = model(input_ids=ids, attention_mask=attn).logits.float()
    lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
    return lp * attn[:, 1:]


def test_model_loglikelihoods_match_reference():
    """The same model: kernel (bf16, CUDA) vs reference (float32): per-token log-probs agree.

    Stated tolerance: mean |difference| <= 0.02 nats, per-sequence sums within 1%.
    """
    from softpick_bench.models.tiny import build_model, tiny_llama_config

    cfg = tiny_llama_config(hidden=512, layers=4, heads=8, kv_heads=2, intermediate=1024, max_positions=1024)
    model = build_model(cfg, "softpick", seed=0).cuda()
    ids = torch.randint(3, cfg.vocab_size, (4, 300), device="cuda")
    attn = torch.ones_like(ids)
    attn[1, :37] = 0  # left padding
    attn[2, :200] = 0
    with torch.no_grad():
        fast = _token_logprobs(model.to(torch.bfloat16), ids, attn)
        ref = _ref_logprobs(model.float(), ids, attn)
    diff = (fast - ref).abs()
    assert diff.sum() / attn[:, 1:].sum() <= 0.02, diff.max()
    sums_f, sums_r = fast.sum(1), ref.sum(1)
    assert ((sums_f - sums_r).abs() / sums_r.abs()).max() <= 0.01


def _ref_logprobs(model, ids, attn):
    """Force the reference on CUDA tensors for this one pass (the kernel path is swapped out)."""
    orig = dispatch.triton_attention
    dispatch.triton_attention = lambda q, k, v, kind, mask, scale, causal=False: reference.attention(
        q, k, v, kind=kind, mask=mask, causal=causal, scale=scale)
    try:
        return _token_logprobs(model, ids, attn)
    finally:
        dispatch.triton_attention = orig


@pytest.mark.parametrize("kind", ["softmax", "softpick"])
@pytest.mark.parametrize("shape", [(16, 8, 8, 512, 512, 64), (2, 8, 2, 1000, 1000, 128)],
                         ids=lambda s: "x".join(map(str, s)))
def test_backward_is_deterministic(kind, shape):
    """Two backward passes on the same inputs give bit-identical gradients (pairs retrain bit for bit)."""
    q, k, v = qkv(*shape)
    do = torch.randn_like(q)
    runs = []
    for _ in range(2):
        xs = [x.detach().clone().requires_grad_() for x in (q, k, v)]
        out = flash_attention(*xs, kind=kind, causal=True)
        out.backward(do)
        runs.append([out] + [x.grad for x in xs])
    for name, a, b in zip(("out", "dq", "dk", "dv"), *runs):
        assert torch.isfinite(a).all() and torch.equal(a, b), f"{kind} {name} differs between two runs"
