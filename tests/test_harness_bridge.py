"""The lm-eval bridge scores a model through its own attention kind, as lm-eval would."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from transformers import AutoTokenizer
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from softpick_bench.errors import TaskError
from softpick_bench.eval.harness.bridge import BenchLM
from softpick_bench.eval.tasks import EvalTarget, make_spec, run_task, task_names
from softpick_bench.kernels import reference
from softpick_bench.models.tiny import build_model, tiny_llama_config

TOKENIZER = "softpick_bench/assets/tokenizer"
REQUESTS = [
    ("Question: Which gas do plants take in?\nAnswer:", " carbon dioxide"),
    ("Question: Which gas do plants take in?\nAnswer:", " oxygen"),
    ("The cat sat on the", " mat"),
    ("In my palm is a clear stone, and inside it is a small ivory statuette. A guardian", " angel"),
]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(Path(__file__).resolve().parents[1] / TOKENIZER))


@pytest.fixture(scope="module")
def models(tokenizer):
    config = tiny_llama_config(vocab_size=len(tokenizer), layers=2)
    return {kind: build_model(config, kind, seed=3) for kind in ("softpick", "softmax")}


def direct_logits(model, ids: torch.Tensor, kind: str) -> torch.Tensor:
    """The Llama forward written out, attention from softpick_bench.kernels.reference."""
    inner = model.model
    batch, length = ids.shape
    x = inner.embed_tokens(ids)
    cos, sin = inner.rotary_emb(x, torch.arange(length)[None])
    for layer in inner.layers:
        attn = layer.self_attn
        h = layer.input_layernorm(x)
        q, k, v = (
            proj(h).view(batch, length, -1, attn.head_dim).transpose(1, 2)
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj)
        )
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        o = reference.attention(q, k, v, kind=kind, mask=None, causal=True, scale=attn.head_dim**-0.5)
        x = x + attn.o_proj(o.transpose(1, 2).reshape(batch, length, -1))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.lm_head(inner.norm(x))


def direct_loglikelihood(model, kind: str, context: list[int], continuation: list[int]) -> float:
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logprobs = torch.log_softmax(direct_logits(model, ids, kind).float(), dim=-1)[0]
    positions = torch.arange(len(context) - 1, len(context) + len(continuation) - 1)
    return float(logprobs[positions, torch.tensor(continuation)].sum())


def instances(requests) -> list[Instance]:
    return [
        Instance(request_type="loglikelihood", doc={}, arguments=req, idx=0, metadata=("t", i, 1))
        for i, req in enumerate(requests)
    ]


def test_softpick_model_is_scored_through_softpick_attention(models, tokenizer):
    lm = BenchLM(models["softpick"], tokenizer, batch_size=3)  # 2 batches of different padded lengths
    got = [ll for ll, _ in lm.loglikelihood(instances(REQUESTS), disable_tqdm=True)]
    pairs = [lm._encode_pair(ctx, cont) for ctx, cont in REQUESTS]
    softpick = [direct_loglikelihood(models["softpick"], "softpick", c, t) for c, t in pairs]
    softmax = [direct_loglikelihood(models["softpick"], "softmax", c, t) for c, t in pairs]
    assert got == pytest.approx(softpick, rel=1e-4, abs=1e-4)
    # the same weights under softmax attention score every request differently
    assert all(abs(a - b) > 1e-2 for a, b in zip(got, softmax))
    softmax_lm = BenchLM(models["softmax"], tokenizer, batch_size=3)
    got_softmax = [ll for ll, _ in softmax_lm.loglikelihood(instances(REQUESTS), disable_tqdm=True)]
    assert got_softmax == pytest.approx(softmax, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("batch_tokens", [None, 40])
def test_fast_scoring_equals_lm_eval_hflm(models, tokenizer, batch_tokens):
    """Same log-likelihoods and greedy flags as HFLM's own loop, left truncation included."""
    requests = [(None, *BenchLM(models["softpick"], tokenizer)._encode_pair(c, t)) for c, t in REQUESTS]
    requests.append((None, list(range(10, 40)), [5, 6, 7]))  # longer than max_length: truncated on the left
    ours = BenchLM(models["softpick"], tokenizer, batch_size=8, batch_tokens=batch_tokens, max_length=24)
    stock = HFLM(pretrained=models["softpick"], tokenizer=tokenizer, batch_size=2, max_length=24)
    got = ours._loglikelihood_tokens(requests, disable_tqdm=True)
    want = stock._loglikelihood_tokens(requests, disable_tqdm=True)
    assert [g for _, g in got] == [w for _, w in want]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in want], rel=1e-5, abs=1e-5)
    if batch_tokens is not None:
        assert ours.forward_calls > 1 and ours.forward_tokens <= ours.forward_calls * batch_tokens


def test_registered_tasks_record_options_and_stderr(models, tokenizer):
    target = EvalTarget(models["softpick"], tokenizer, "softpick", "cpu", seed=7)
    metrics = run_task(target, make_spec("arc_easy", {"limit": 3, "batch_size": 16})).metrics
    by_name = {m.metric: m for m in metrics}
    assert set(by_name) == {"acc", "acc_norm"}
    for m in metrics:
        assert 0.0 <= m.value <= 1.0 and m.stderr is not None and m.higher_is_better is True
        d = m.details
        assert (d["num_fewshot"], d["limit"], d["documents"], d["batch_size"], d["seed"]) == (0, 3, 3, 16, 7)
        assert d["max_length"] == models["softpick"].config.max_position_embeddings
        assert d["lm_eval_version"] and d["attention_kind"] == "softpick" and d["source"] == "local"
        assert len(d["data"]["sha256"]) == 64


def test_word_perplexity_and_gptq_perplexity_never_share_a_name(models, tokenizer):
    assert {"wikitext2", "wikitext_word", "lambada_openai"} <= set(task_names())
    target = EvalTarget(models["softpick"], tokenizer, "softpick", "cpu")
    spec = make_spec("wikitext_word", {"limit": 1, "max_length": 256, "batch_size": 4})
    names = {m.metric for m in run_task(target, spec).metrics}
    assert names == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
    assert "ppl_gptq" not in names


def test_few_shot_on_shipped_data_is_refused(models, tokenizer):
    target = EvalTarget(models["softpick"], tokenizer, "softpick", "cpu")
    with pytest.raises(TaskError, match="training split"):
        run_task(target, make_spec("piqa", {"num_fewshot": 5, "limit": 2}))
