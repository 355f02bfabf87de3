"""The sweep-level request cache scores exactly what lm-eval would, builds requests once, and
is invalidated by anything that changes them."""

from __future__ import annotations

import copy
import gzip
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

import lm_eval
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM

from softpick_bench.eval import items
from softpick_bench.eval.harness import requests
from softpick_bench.eval.harness.evaluate import run_harness_task_uncached
from softpick_bench.eval.harness.tasks import HARNESS_TASKS, task_manager
from softpick_bench.eval.tasks import EvalTarget, make_spec, run_task
from softpick_bench.models.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def _options(task: str, limit: int = 1) -> dict:
    # wikitext documents are long: a short window keeps the rolling loglikelihood quick on CPU
    return {"limit": 1, "max_length": 64} if task == "wikitext_word" else {"limit": limit}


@pytest.fixture(scope="module")
def pair():
    return {
        kind: load_checkpoint(str(ROOT / "checkpoints/micro" / kind), dtype="float32", device="cpu")
        for kind in ("softmax", "softpick")
    }


def _target(loaded, cache_dir=None, seed=0):
    return EvalTarget(loaded.model, loaded.tokenizer, loaded.kind, "cpu", seed, cache_dir=cache_dir)


def _numbers(metrics):
    return [(m.metric, m.details["filter"], m.value, m.stderr) for m in metrics]


@pytest.mark.parametrize("task", sorted(HARNESS_TASKS))
def test_cached_path_equals_uncached_path_and_hflm(pair, task):
    """Same metrics and stderrs as simple_evaluate (exactly), same per-request log-likelihoods as
    lm-eval's own HFLM, and per-item values that reproduce every metric."""
    requests.forget_prepared()
    loaded = pair["softpick"]
    spec = make_spec(task, _options(task))
    cached = run_task(_target(loaded), spec)
    assert _numbers(cached.metrics) == _numbers(run_harness_task_uncached(_target(loaded), spec))

    for m in cached.metrics:
        if m.metric in cached.items["metrics"]:
            per = cached.items["metrics"][m.metric]
            assert per["ids"] == list(range(m.details["documents"]))
            assert items.aggregate(per["aggregation"], per["values"]) == pytest.approx(m.value, rel=1e-12)
    assert set(cached.items["metrics"]) == {m.metric for m in cached.metrics}

    # per request: the cached instances' responses against stock HFLM's (its padded loop, same model)
    prepared = next(iter(requests._PREPARED.values()))
    ours = [inst.resps[0] for inst in prepared.task.instances]
    lm_name = HARNESS_TASKS[task].lm_eval_name
    opts = dict(spec.options)
    stock = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=8, max_length=opts["max_length"])
    out = simple_evaluate(
        model=stock, tasks=[lm_name], task_manager=task_manager("local"), num_fewshot=0, limit=opts["limit"],
        bootstrap_iters=opts["bootstrap_iters"], log_samples=True, random_seed=0, numpy_random_seed=0,
        torch_random_seed=0, fewshot_random_seed=0,
    )  # fmt: skip
    theirs = [resp[0] for s in sorted(out["samples"][lm_name], key=lambda s: s["doc_id"]) for resp in s["resps"]]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        if isinstance(a, tuple):  # (loglikelihood, is_greedy)
            assert a[1] == b[1] and a[0] == pytest.approx(b[0], rel=1e-5, abs=1e-4)
        else:  # rolling: the document's summed loglikelihood
            assert a == pytest.approx(b, rel=1e-5)


def test_requests_are_built_once_per_task_and_tokenizer(pair):
    """However many models a sweep scores, lm-eval's request construction runs once per key."""
    requests.forget_prepared()
    requests.BUILDS.clear()
    spec = make_spec("arc_easy", {"limit": 3})
    models = [pair["softmax"], pair["softpick"]]
    quantized = copy.deepcopy(pair["softmax"])
    for p in quantized.model.parameters():
        p.data = p.data.half().float()  # another model: same architecture, other weights
    models.append(quantized)
    keys = set()
    for loaded in models:
        out = run_task(_target(loaded), spec)
        keys |= {m.details["request_cache"]["key"] for m in out.metrics}
    assert len(keys) == 1 and requests.BUILDS[keys.pop()] == 1 and sum(requests.BUILDS.values()) == 1
    run_task(_target(pair["softmax"]), make_spec("arc_easy", {"limit": 4}))  # other options: other requests
    assert sum(requests.BUILDS.values()) == 2


def test_request_key_changes_with_tokenizer_options_version_and_data(pair, monkeypatch):
    tok = pair["softmax"].tokenizer
    base = dict(lm_name="arc_easy", request_options={"limit": 3, "num_fewshot": 0, "source": "local", "seed": 0},
                tokenizer=tok, max_length=1024, data_digest="a" * 64)  # fmt: skip
    key = requests.request_key(**base)
    assert requests.request_key(**base) == key
    other_tok = copy.deepcopy(tok)
    other_tok.add_tokens(["<softpick-bench-extra>"])
    assert requests.request_key(**dict(base, tokenizer=other_tok)) != key
    for option, value in [("limit", 4), ("num_fewshot", 5), ("source", "hub"), ("seed", 1)]:
        changed = dict(base["request_options"], **{option: value})
        assert requests.request_key(**dict(base, request_options=changed)) != key, option
    assert requests.request_key(**dict(base, max_length=512)) != key
    assert requests.request_key(**dict(base, data_digest="b" * 64)) != key
    monkeypatch.setattr(lm_eval, "__version__", "0.0.0-other")
    assert requests.request_key(**base) != key


def test_resumed_sweep_reuses_stored_requests_and_rebuilds_bad_ones(pair, tmp_path):
    spec = make_spec("piqa", {"limit": 3})
    requests.forget_prepared()
    first = run_task(_target(pair["softmax"], cache_dir=str(tmp_path)), spec)
    key = first.metrics[0].details["request_cache"]["key"]
    stored = tmp_path / "requests" / f"{key}.json.gz"
    assert stored.is_file()

    requests.forget_prepared()  # a new process: the run folder still holds the tokenized requests
    loads = requests.LOADED_FROM_DISK[key]
    again = run_task(_target(pair["softmax"], cache_dir=str(tmp_path)), spec)
    assert requests.LOADED_FROM_DISK[key] == loads + 1
    assert _numbers(again.metrics) == _numbers(first.metrics)

    for damage in (b"not gzip", gzip.compress(b'{"format": 1, "requests_digest": "stale", "encodings": []}')):
        stored.write_bytes(damage)
        requests.forget_prepared()
        rebuilt = run_task(_target(pair["softmax"], cache_dir=str(tmp_path)), spec)
        assert requests.LOADED_FROM_DISK[key] == loads + 1  # not trusted: tokenized again, file rewritten
        assert _numbers(rebuilt.metrics) == _numbers(first.metrics)
        assert gzip.decompress(stored.read_bytes())


def test_lambada_perplexity_stderr_is_lm_evals_on_the_cached_path(pair, monkeypatch):
    """The cached path computes the perplexity stderr with the vectorised bootstrap
    (eval/harness/bootstrap.py), the uncached one with lm-eval's own pool: the same numbers."""
    from softpick_bench.eval.harness import bootstrap

    chunks, replicates = [], bootstrap.perplexity_replicates
    monkeypatch.setattr(bootstrap, "perplexity_replicates", lambda *a: chunks.append(a[1]) or replicates(*a))
    requests.forget_prepared()
    spec = make_spec("lambada_openai", {"limit": 30})
    cached = run_task(_target(pair["softmax"]), spec)
    assert sorted(chunks) == sorted([0, 99] + list(range(100)))  # the probe, then all 100 chunks: no fallback
    by_metric = {m.metric: m for m in cached.metrics}
    assert by_metric["perplexity"].stderr is not None and by_metric["perplexity"].stderr > 0
    assert _numbers(cached.metrics) == _numbers(run_harness_task_uncached(_target(pair["softmax"]), spec))
