"""The committed micro pair: loads as its own kind, is trained (not random), and is a true pair."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from softpick_bench.eval.analysis import analyse, sample_sequences, source_documents
from softpick_bench.eval.tasks import EvalTarget, make_spec, run_task
from softpick_bench.models.checkpoint import load_checkpoint
from softpick_bench.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "checkpoints" / "micro"


@pytest.fixture(scope="module")
def pair():
    return {kind: load_checkpoint(MICRO / kind) for kind in ("softmax", "softpick")}


def test_micro_pair_kinds_and_shapes(pair):
    assert {k: m.kind for k, m in pair.items()} == {"softmax": "softmax", "softpick": "softpick"}
    cfgs = [m.model.config.to_dict() for m in pair.values()]
    for c in cfgs:
        for key in ("attention_kind", "training", "_name_or_path", "_attn_implementation_autoset"):
            c.pop(key, None)
    assert cfgs[0] == cfgs[1]  # attention is the only difference
    trains = [m.model.config.training for m in pair.values()]
    recipe = TrainConfig.from_yaml(ROOT / "configs" / "train" / "micro.yaml")  # the pair is its recipe's
    assert trains[0]["seed"] == trains[1]["seed"] == recipe.seed
    assert trains[0]["steps"] == trains[1]["steps"] == recipe.steps
    for f in ("model.safetensors", "tokenizer.json", "train_config.json"):
        assert all((MICRO / k / f).is_file() for k in pair)
    assert all((MICRO / k / "model.safetensors").stat().st_size < 6_500_000 for k in pair)


def test_micro_pair_is_trained_on_held_out_text(pair):
    docs, _ = source_documents("corpus-heldout")
    rows = sample_sequences(pair["softmax"].tokenizer, docs, 4, 128, seed=1)
    with torch.no_grad():
        for loaded in pair.values():
            logits = loaded.model(input_ids=rows).logits[:, :-1]
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1)).item()
            assert nll < 5.5 < math.log(8192)  # random init sits at ln(8192) = 9.01


def test_micro_softpick_is_sparse_softmax_is_not(pair):
    docs, _ = source_documents("corpus-heldout")
    rows = sample_sequences(pair["softmax"].tokenizer, docs, 2, 64, seed=0)
    sparsity = {k: analyse(m.model, k, rows, "cpu")[0]["attn_sparsity"] for k, m in pair.items()}
    assert sparsity["softmax"] < 0.01 and sparsity["softpick"] > 0.3


def test_micro_pair_shows_the_phenomenon(pair):
    """Issue 11's bar for the default pair, with the default sweep's analysis settings (32 x 64, bos
    first): softmax sink rate >= 20% at eps 0.3, softpick <= 2%, kurtosis ratio >= 5."""
    spec = make_spec("analysis", {"n_samples": 32, "seq_len": 64})
    values = {}
    for kind, m in pair.items():
        metrics = run_task(EvalTarget(m.model, m.tokenizer, kind, "cpu"), spec).metrics
        values[kind] = {x.metric: x.value for x in metrics}
    assert values["softmax"]["sink_rate_0.3"] >= 0.20 and values["softpick"]["sink_rate_0.3"] <= 0.02
    assert values["softmax"]["kurtosis"] >= 5 * values["softpick"]["kurtosis"]
