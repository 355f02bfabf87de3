"""Analysis metrics on constructed inputs with known answers."""

import math

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from softpick_bench.eval.analysis import AttentionStats, MomentAccumulator, analyse, sample_sequences, source_documents
from softpick_bench.eval.tasks import EvalTarget, make_spec, run_task
from softpick_bench.models.attention import AttentionHooks, set_hooks
from softpick_bench.models.tiny import build_model, tiny_llama_config
from softpick_bench.train.trainer import TOKENIZER_DIR


def test_moments_known_answers():
    acc = MomentAccumulator()
    acc.add(torch.tensor([-2.0, 2.0] * 50))  # two-point symmetric: kurtosis exactly 1
    assert acc.kurtosis() == pytest.approx(1.0)
    assert (acc.min, acc.max, acc.n) == (-2.0, 2.0, 100)
    rng = np.random.default_rng(0)
    x = rng.standard_t(df=5, size=20000) + 1e4  # large offset: shifted sums must not cancel
    acc = MomentAccumulator()
    for chunk in np.array_split(x, 7):
        acc.add(torch.from_numpy(chunk))
    c = x - x.mean()
    assert acc.kurtosis() == pytest.approx((c**4).mean() / (c**2).mean() ** 2, rel=1e-6)


def test_attention_stats_hand_made_maps():
    stats = AttentionStats()
    stats.new_sample()
    q = 4
    w = torch.zeros(1, 2, q, q)
    w[0, 0, :, 0] = 0.5  # head 0: half of every row on the first token -> sink head at 0.3
    w[0, 1, :, 0] = 0.1  # head 1: 0.1 -> not a sink head
    w[0, 1, :, 1] = 0.9
    valid = torch.tril(torch.ones(q, q, dtype=torch.bool))[None, None]
    out = torch.ones(1, 2, q, 3)
    out[0, 1] = 0.0  # head 1 silent on every token -> dead
    stats.add(0, w * valid, valid, out)
    assert stats.sink_rate(0.3) == 0.5 and stats.sink_rate(0.05) == 1.0
    zeros_expected = (valid.sum() * 2 - (q + (q - 1) + q)).item()  # nonzeros: h0 col0 (q), h1 col1 (q-1), h1 col0 (q)
    assert stats.zeros == zeros_expected and stats.triangle == 2 * valid.sum().item()
    assert stats.dead_heads() == (0.5, 1, 2)


def _zero_qk_model(kind: str, a: float = 0.25):
    """q/k projections zero (all scores 0), o/down projections zero (every layer is the identity)."""
    cfg = tiny_llama_config(hidden=32, layers=2, heads=2, kv_heads=2, intermediate=64)
    model = build_model(cfg, kind, seed=0)
    with torch.no_grad():
        for layer in model.model.layers:
            for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.o_proj, layer.mlp.down_proj):
                lin.weight.zero_()
        sign = torch.tensor([1.0, -1.0]).repeat(16)
        model.model.embed_tokens.weight.copy_(a * sign.expand_as(model.model.embed_tokens.weight))
    return model


def test_analyse_softmax_uniform_attention():
    t = 16  # uniform causal softmax: mean mass on token 0 = H_16 / 16 = 0.2113
    rows = torch.randint(3, 8000, (2, t), generator=torch.Generator().manual_seed(0))
    values, details = analyse(_zero_qk_model("softmax"), "softmax", rows, "cpu")
    assert sum(1 / (i + 1) for i in range(t)) / t == pytest.approx(0.2113, abs=1e-4)
    assert values["sink_rate_0.2"] == 1.0 and values["sink_rate_0.3"] == 0.0
    assert values["kurtosis"] == pytest.approx(1.0)  # hidden states are +-0.25 only
    assert (values["hidden_min"], values["hidden_max"]) == (-0.25, 0.25)
    assert values["attn_sparsity"] == 0.0 and values["dead_heads"] == 0.0
    assert details["n_samples"] == 2 and details["hidden_values"] == 2 * t * 32 * 3


def test_analyse_softpick_zero_scores_and_probability_hook():
    rows = torch.randint(3, 8000, (1, 8), generator=torch.Generator().manual_seed(1))
    values, _ = analyse(_zero_qk_model("softpick"), "softpick", rows, "cpu")  # e^0 - 1 = 0: all weights 0
    assert values["attn_sparsity"] == 1.0 and values["dead_heads"] == 1.0 and values["sink_rate_0.2"] == 0.0
    model = _zero_qk_model("softmax")
    set_hooks(model, AttentionHooks(probs=lambda w: torch.where(w > 0.3, w, torch.zeros_like(w))))
    values, _ = analyse(model, "softmax", rows, "cpu")  # the hook (e.g. quantized probabilities) is in force
    t = 8
    kept = sum(i + 1 for i in range(t) if 1 / (i + 1) > 0.3)  # rows 0..2 keep their (uniform) weights
    assert values["attn_sparsity"] == pytest.approx(1 - kept / (t * (t + 1) / 2))


def test_analysis_task_on_text(tmp_path):
    text = tmp_path / "sample.txt"
    text.write_text("\n\f\n".join(f"Document {i}. " + "The quick brown fox jumps over the lazy dog. " * 20
                                  for i in range(4)))
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER_DIR))
    docs, digest = source_documents(str(text))
    rows = sample_sequences(tok, docs, 3, 24, seed=0)
    assert rows.shape == (3, 24) and bool((rows[:, 0] == tok.bos_token_id).all()) and len(digest) == 12
    no_bos = sample_sequences(tok, docs, 3, 24, seed=0, prepend_bos=False)
    assert no_bos.shape == (3, 24) and not bool((no_bos == tok.bos_token_id).any())
    model = build_model(tiny_llama_config(hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64), "softpick")
    spec = make_spec("analysis", {"n_samples": 3, "seq_len": 24, "source": str(text)})
    metrics = {m.metric: m for m in run_task(EvalTarget(model, tok, "softpick", "cpu"), spec).metrics}
    assert set(metrics) == {"sink_rate_0.2", "sink_rate_0.3", "kurtosis", "hidden_min", "hidden_max",
                            "attn_sparsity", "dead_heads"}
    assert metrics["kurtosis"].details["n_samples"] == 3
    assert all(math.isfinite(m.value) for m in metrics.values())
    assert model.config._attn_implementation == "softpick"  # restored after the analysis pass


def test_default_source_is_packaged():
    docs, _ = source_documents("corpus-heldout")
    assert len(docs) >= 1 and sum(len(d) for d in docs) > 100_000
