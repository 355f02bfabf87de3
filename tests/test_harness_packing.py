"""Packed (varlen) scoring in the lm-eval bridge gives the padded loop's and HFLM's numbers.

The packed loop concatenates requests into one row with position ids restarting at 0 and
passes cu_seq_lens_q/k to the attention kinds; no dense mask may be built on the way.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.models.huggingface import HFLM
from transformers import AutoTokenizer

from softpick_bench.eval.harness.bridge import BenchLM
from softpick_bench.kernels.flash import FlashConfig, set_config_override, set_poison
from softpick_bench.models import attention as attention_mod
from softpick_bench.models.attention import AttentionHooks, packed_attention, packed_attention_mask, set_hooks
from softpick_bench.models.tiny import build_model, tiny_llama_config

TOKENIZER = "softpick_bench/assets/tokenizer"
KINDS = ("softmax", "softpick")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(Path(__file__).resolve().parents[1] / TOKENIZER))


@pytest.fixture(scope="module")
def models(tokenizer):
    """Two layers, four query heads over two KV heads (grouped-query), same weights for both kinds."""
    return {kind: build_model(tiny_llama_config(vocab_size=len(tokenizer), layers=2), kind, seed=5) for kind in KINDS}


def random_requests(n: int, seed: int) -> list[tuple]:
    """Requests of assorted lengths (1..23 context, 1..5 continuation tokens), one longer than max_length."""
    g = torch.Generator().manual_seed(seed)
    reqs = []
    for _ in range(n):
        ctx = int(torch.randint(1, 24, (1,), generator=g))
        cont = int(torch.randint(1, 6, (1,), generator=g))
        reqs.append(
            (None, torch.randint(3, 8000, (ctx,), generator=g).tolist(), torch.randint(3, 8000, (cont,), generator=g).tolist())
        )
    reqs.append((None, list(range(10, 50)), [5, 6, 7]))  # truncated on the left to max_length
    return reqs


def _refuse_dense_mask(*args, **kwargs):
    raise AssertionError("a dense attention mask was built during packed scoring")


@pytest.mark.parametrize("kind", KINDS)
def test_packed_scoring_equals_padded_loop(models, tokenizer, kind, monkeypatch):
    requests = random_requests(14, seed=11)
    packed = BenchLM(models[kind], tokenizer, batch_size=6, batch_tokens=60, max_length=24, packing="on")
    monkeypatch.setattr(attention_mod, "sdpa_mask", _refuse_dense_mask)  # our kinds' (B, 1, T, T) mask builder
    got = packed._loglikelihood_tokens(requests, disable_tqdm=True)
    monkeypatch.undo()
    assert packed.uses_packing() and packed.forward_calls > 1
    assert packed.forward_tokens == packed.real_tokens <= packed.forward_calls * 60  # no padding, budget kept

    padded = BenchLM(models[kind], tokenizer, batch_size=6, batch_tokens=60, max_length=24, packing="off")
    want_padded = padded._loglikelihood_tokens(requests, disable_tqdm=True)
    assert padded.real_tokens == packed.real_tokens and padded.forward_tokens > padded.real_tokens
    assert packed.scored_tokens == padded.scored_tokens and packed.causal_pairs == padded.causal_pairs
    assert [g for _, g in got] == [w for _, w in want_padded]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in want_padded], rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_packed_scoring_equals_hflm(models, tokenizer, kind):
    requests = random_requests(10, seed=12)
    ours = BenchLM(models[kind], tokenizer, batch_size=32, max_length=24, packing="on")
    stock = HFLM(pretrained=models[kind], tokenizer=tokenizer, batch_size=4, max_length=24)
    got = ours._loglikelihood_tokens(requests, disable_tqdm=True)
    want = stock._loglikelihood_tokens(requests, disable_tqdm=True)
    assert ours.forward_calls == 1
    assert [g for _, g in got] == [w for _, w in want]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in want], rel=1e-5, abs=1e-5)


def test_greedy_flags_agree_when_some_are_true(models, tokenizer):
    """Continuations made of the model's own argmax tokens: greedy True, scored identically in both loops."""
    model = models["softpick"]
    requests = []
    g = torch.Generator().manual_seed(4)
    for n in (3, 7, 12, 5):
        ctx = torch.randint(3, 8000, (n,), generator=g).tolist()
        with torch.no_grad():
            nxt = int(model(input_ids=torch.tensor([ctx])).logits[0, -1].argmax())
        requests.append((None, ctx, [nxt]))
        requests.append((None, ctx, [nxt + 1 if nxt + 1 < 8000 else 3]))
    got = BenchLM(model, tokenizer, batch_size=16, packing="on")._loglikelihood_tokens(requests, disable_tqdm=True)
    want = BenchLM(model, tokenizer, batch_size=16, packing="off")._loglikelihood_tokens(requests, disable_tqdm=True)
    assert [flag for _, flag in got] == [True, False] * 4 == [flag for _, flag in want]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in want], rel=1e-5, abs=1e-5)


def test_packing_mode_choice(models, tokenizer):
    model = models["softpick"]
    assert BenchLM(model, tokenizer).uses_packing()  # auto, our kind, no hooks
    assert not BenchLM(model, tokenizer, packing="off").uses_packing()
    try:
        set_hooks(model, AttentionHooks(kv=lambda k, v: (k, v)))
        assert not BenchLM(model, tokenizer).uses_packing()  # auto keeps the padded loop under hooks
        assert BenchLM(model, tokenizer, packing="on").uses_packing()
    finally:
        set_hooks(model, None)
    with pytest.raises(ValueError, match="packing"):
        BenchLM(model, tokenizer, packing="sometimes")
    old = BenchLM.default_packing
    try:
        BenchLM.default_packing = "off"
        assert BenchLM(model, tokenizer).packing == "off"
    finally:
        BenchLM.default_packing = old


def test_hooks_see_one_request_at_a_time(models, tokenizer):
    """With packing forced on, KV hooks apply per request: the same numbers as the padded loop."""
    model = models["softmax"]

    def kv(k, v):
        return k * 0.5, v.round(decimals=1)

    requests = random_requests(8, seed=13)
    try:
        set_hooks(model, AttentionHooks(kv=kv))
        got = BenchLM(model, tokenizer, batch_size=4, max_length=24, packing="on")._loglikelihood_tokens(
            requests, disable_tqdm=True
        )
        want = BenchLM(model, tokenizer, batch_size=4, max_length=24, packing="off")._loglikelihood_tokens(
            requests, disable_tqdm=True
        )
    finally:
        set_hooks(model, None)
    plain = BenchLM(model, tokenizer, batch_size=4, max_length=24)._loglikelihood_tokens(requests, disable_tqdm=True)
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in want], rel=1e-5, abs=1e-5)
    assert all(abs(a[0] - b[0]) > 1e-4 for a, b in zip(got, plain))  # the hook did change every score


def test_position_ids_restart_and_segments_are_isolated(models):
    """Packed forward of two sequences equals each one's own forward; one wrong boundary changes it."""
    model = models["softpick"]
    a, b = [5, 9, 400, 33, 7], [17, 2000, 81]
    ids = torch.tensor([a + b])
    pos = torch.tensor([list(range(5)) + list(range(3))])
    decoder = model.get_decoder()

    def packed(cu):
        cu = torch.tensor(cu, dtype=torch.int32)
        with torch.no_grad():
            return decoder(input_ids=ids, position_ids=pos, attention_mask=packed_attention_mask(), use_cache=False,
                           cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=5, max_length_k=5).last_hidden_state[0]

    with torch.no_grad():
        alone = torch.cat([decoder(input_ids=torch.tensor([s]), use_cache=False).last_hidden_state[0] for s in (a, b)])
    torch.testing.assert_close(packed([0, 5, 8]), alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(packed([0, 4, 8]), alone, atol=1e-3)


def test_placeholder_mask_needs_cu_seqlens(models):
    decoder = models["softmax"].get_decoder()
    with torch.no_grad(), pytest.raises(ValueError, match="cu_seq_lens"):
        decoder(input_ids=torch.tensor([[5, 6, 7]]), attention_mask=packed_attention_mask(), use_cache=False)


@pytest.mark.parametrize("kind", KINDS)
def test_kernel_varlen_path_equals_per_sequence_path(kind):
    """The CUDA branch of packed_attention (Triton interpreter on CPU) against its per-sequence branch."""
    if torch.cuda.is_available():
        pytest.skip("interpreter check; the GPU runs the same branch for real")
    g = torch.Generator().manual_seed(2)
    lengths = [7, 1, 19, 4]
    n = sum(lengths)
    q = torch.randn(1, 4, n, 16, generator=g)
    k = torch.randn(1, 2, n, 16, generator=g)
    v = torch.randn(1, 2, n, 16, generator=g)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    set_config_override(FlashConfig(fwd_m=16, fwd_n=16, fwd_warps=2))
    set_poison(True)
    try:
        fast = packed_attention(q, k, v, kind, 0.25, cu, cu, max(lengths), max(lengths), use_kernel=True)
    finally:
        set_config_override(None)
        set_poison(False)
    slow = packed_attention(q, k, v, kind, 0.25, cu, cu, use_kernel=False)
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_wikitext2_windows_packed_equal_padded(models, kind, monkeypatch):
    """wikitext2's windows as one packed row give the padded batches' NLLs (float32), with no dense mask."""
    from softpick_bench.eval import perplexity

    model = models[kind]
    ids = torch.randint(3, 8000, (5 * 32 + 7,), generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(perplexity, "PACKING", "off")
    assert perplexity.attention_path(model) == "padded"
    padded = perplexity.window_nlls(model, ids, seq_len=32, batch_size=2, device="cpu")
    monkeypatch.setattr(perplexity, "PACKING", "auto")
    assert perplexity.attention_path(model) == "packed"
    monkeypatch.setattr(attention_mod, "sdpa_mask", _refuse_dense_mask)  # our kinds' (B, 1, T, T) mask builder
    packed = perplexity.window_nlls(model, ids, seq_len=32, batch_size=2, device="cpu")
    assert len(packed) == len(padded) == 5
    assert packed == pytest.approx(padded, rel=1e-5)

    set_hooks(model, AttentionHooks(kv=lambda k, v: (k, v)))  # hooks: the padded batches again
    try:
        assert perplexity.attention_path(model) == "padded"
    finally:
        set_hooks(model, None)
