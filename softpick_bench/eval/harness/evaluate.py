"""Registry entries for the lm-eval tasks: one evaluator per task, run through lm-eval itself.

`run_harness_task` scores the task's requests from the sweep-level request cache (requests.py:
built and tokenized once per task and tokenizer, metrics through lm-eval's own `evaluate`) and
returns per-document items beside the metrics; `run_harness_task_uncached` is lm-eval's
`simple_evaluate` from scratch, the reference the cached path is tested against.

Each returns lm-eval's metrics under lm-eval's names (acc, acc_norm, perplexity,
word_perplexity, ...) with lm-eval's standard error where it gives one, and records in
every Metric's details the options that decide the number. lm_eval is imported only when
a task runs, so the registry (and config validation) works without it installed.
"""

from __future__ import annotations

import logging
import math
import time

from softpick_bench.errors import TaskError
from softpick_bench.eval import items
from softpick_bench.eval.harness.tasks import HARNESS_TASKS, SOURCES, data_manifest
from softpick_bench.eval.declared import HARNESS_OPTIONS
from softpick_bench.eval.tasks import EvalTarget, Metric, TaskOutput, TaskSpec, implements

log = logging.getLogger(__name__)

OPTIONS = HARNESS_OPTIONS  # declared in eval/declared.py


def _number(value) -> float | None:
    """lm-eval writes 'N/A' (or nothing) where it has no standard error."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


_AGGREGATIONS = {"mean": "mean", "perplexity": "perplexity", "weighted_perplexity": "weighted_perplexity",
                 "bits_per_byte": "bits_per_byte"}


def _check_options(name: str, opts: dict) -> None:
    if opts["source"] not in SOURCES:
        raise TaskError(f"task {name!r}: source {opts['source']!r} unknown; valid: {', '.join(SOURCES)}")
    if opts["source"] == "local" and opts["num_fewshot"] != 0:
        raise TaskError(
            f"task {name!r}: num_fewshot={opts['num_fewshot']} needs the training split, which is not shipped; "
            "use num_fewshot 0 or source 'hub'"
        )


def _data_digest(lm_name: str, source: str) -> str | None:
    return data_manifest()[lm_name]["sha256"] if source == "local" else None


def _lm(cls, target: EvalTarget, opts: dict):
    return cls(
        target.model,
        target.tokenizer,
        batch_size=opts["batch_size"],
        batch_tokens=opts["batch_tokens"],
        max_length=opts["max_length"],
    )


def run_harness_task(target: EvalTarget, spec: TaskSpec) -> TaskOutput:
    """Score the task's cached requests on the target model; metrics through lm-eval's evaluate."""
    from lm_eval.evaluator import evaluate

    from softpick_bench.eval.harness import requests
    from softpick_bench.eval.harness.bootstrap import vectorised_perplexity_stderr
    from softpick_bench.eval.harness.tasks import task_manager
    from softpick_bench.eval.harness.templates import compiled_templates
    from softpick_bench.models.fused import scoring_forward

    opts = dict(spec.options)
    name = spec.name
    _check_options(name, opts)
    lm_name = HARNESS_TASKS[name].lm_eval_name
    lm = _lm(requests.CachedLM, target, opts)
    seed = target.seed
    request_options = {k: opts[k] for k in ("num_fewshot", "limit", "source")} | {"seed": seed}
    key = requests.request_key(
        lm_name, request_options, target.tokenizer, lm.max_length, _data_digest(lm_name, opts["source"])
    )
    start = time.perf_counter()
    with compiled_templates():  # the same prompts, each template compiled once (templates.py)
        prepared = requests.prepare(
            lm_name,
            task_manager(opts["source"]),
            lm,
            num_fewshot=opts["num_fewshot"],
            limit=opts["limit"],
            seed=seed,
            key=key,
            cache_dir=None if target.cache_dir is None else f"{target.cache_dir}/requests",
        )
    prepare_s = time.perf_counter() - start
    lm.attach(prepared)
    task = prepared.task
    per_doc: list[dict] = []  # lm-eval's own process_results output, document by document

    def recording(doc, results):
        metrics = type(task).process_results(task, doc, results)
        per_doc.append(metrics)
        return metrics

    # log_samples=False: lm-eval's sample logging re-renders every document's target through a
    # freshly compiled Jinja template (most of a cell's time on a GPU); the items come from here
    task.process_results = recording
    requests.set_seeds(seed)  # as simple_evaluate leaves them before evaluate
    try:
        # lm-eval's own strings and stderr numbers, computed faster
        with compiled_templates(), vectorised_perplexity_stderr(), scoring_forward(target.model, opts["forward"]):
            out = evaluate(
                lm=lm,
                task_dict=prepared.task_dict,
                limit=opts["limit"],
                bootstrap_iters=opts["bootstrap_iters"],
                log_samples=False,
            )
    finally:
        del task.process_results
    seconds = time.perf_counter() - start
    metrics = _metrics(out, lm_name, opts, lm, target, seconds)
    for m in metrics:
        m.details["request_cache"] = {"key": key, "prepare_s": round(prepare_s, 3)}
    return TaskOutput(metrics, _items(per_doc, task, opts["limit"], name))


def run_harness_task_uncached(target: EvalTarget, spec: TaskSpec) -> list[Metric]:
    """The reference path: lm-eval's simple_evaluate from scratch (requests rebuilt and tokenized)."""
    from lm_eval import simple_evaluate

    from softpick_bench.eval.harness.bridge import BenchLM
    from softpick_bench.eval.harness.tasks import task_manager
    from softpick_bench.models.fused import scoring_forward

    opts = dict(spec.options)
    _check_options(spec.name, opts)
    lm_name = HARNESS_TASKS[spec.name].lm_eval_name
    lm = _lm(BenchLM, target, opts)
    seed = target.seed
    start = time.perf_counter()
    with scoring_forward(target.model, opts["forward"]):
        out = simple_evaluate(
            model=lm,
            tasks=[lm_name],
            task_manager=task_manager(opts["source"]),
            num_fewshot=opts["num_fewshot"],
            limit=opts["limit"],
            bootstrap_iters=opts["bootstrap_iters"],
            use_cache=None,  # lm-eval's request cache is keyed on the request only: never share it
            cache_requests=False,
            log_samples=False,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    return _metrics(out, lm_name, opts, lm, target, time.perf_counter() - start)


def _metrics(out: dict, lm_name: str, opts: dict, lm, target: EvalTarget, seconds: float) -> list[Metric]:
    import lm_eval

    res = out["results"][lm_name]
    details = {
        "lm_eval_task": lm_name,
        "lm_eval_version": lm_eval.__version__,
        "task_version": out["versions"].get(lm_name),
        "source": opts["source"],
        "num_fewshot": opts["num_fewshot"],
        "limit": opts["limit"],
        "documents": out["n-samples"][lm_name]["effective"],
        "documents_total": out["n-samples"][lm_name]["original"],
        "batch_size": opts["batch_size"],
        "batch_tokens": opts["batch_tokens"],
        "max_length": lm.max_length,
        "seed": target.seed,
        "bootstrap_iters": opts["bootstrap_iters"],
        "forward": opts["forward"],
        "attention_kind": target.kind,
        "logprob_dtype": "float32",
        "seconds": round(seconds, 3),
        "model_seconds": round(lm.model_seconds, 3),
        "tokens": {
            "forward": lm.forward_tokens,
            "real": lm.real_tokens,
            "scored": lm.scored_tokens,
            "causal_pairs": lm.causal_pairs,
        },
    }
    if opts["source"] == "local":
        entry = data_manifest()[lm_name]
        details["data"] = {"file": entry["file"], "sha256": entry["sha256"], "hub_dataset": entry["hub_dataset"]}

    higher = out.get("higher_is_better", {}).get(lm_name, {})
    metrics = []
    for key, value in res.items():
        metric, _, filt = key.partition(",")
        if metric in ("alias", "samples") or metric.endswith("_stderr") or not filt:
            continue
        stderr = _number(res.get(f"{metric}_stderr,{filt}"))
        metrics.append(
            Metric(
                metric, float(value), stderr, higher_is_better=higher.get(metric), details=dict(details, filter=filt)
            )
        )
    if not metrics:
        raise TaskError(f"task {lm_name!r}: lm-eval returned no metrics ({sorted(res)})")
    return metrics


def _items(per_doc: list[dict], task, limit: int | None, name: str) -> dict:
    """Per-document values of each metric (the first filter's), with lm-eval's aggregation name.

    evaluate() calls process_results once per filter and document, documents in doc_iterator
    order; the first len(docs) calls are the first filter's."""
    from lm_eval.evaluator_utils import get_sample_size

    ids = [doc_id for doc_id, _ in task.doc_iterator(rank=0, limit=get_sample_size(task, limit), world_size=1)]
    if len(per_doc) < len(ids):
        raise TaskError(f"task {name!r}: {len(per_doc)} documents scored, {len(ids)} expected")
    first = per_doc[: len(ids)]
    aggregation = {metric: getattr(fn, "__name__", "") for metric, fn in task.aggregation().items()}
    per_metric: dict[str, dict] = {}
    for metric, agg in aggregation.items():
        if agg not in _AGGREGATIONS:
            log.info("task %s: metric %s aggregates by %r: no per-item values kept", name, metric, agg)
            continue
        rows = [(doc_id, values[metric]) for doc_id, values in zip(ids, first) if metric in values]
        per_metric[metric] = items.metric_items(_AGGREGATIONS[agg], [r[0] for r in rows], [r[1] for r in rows])
    return items.payload(name, per_metric)


for _name in HARNESS_TASKS:
    implements(_name)(run_harness_task)
