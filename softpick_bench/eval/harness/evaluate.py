"""Registry entries for the lm-eval tasks: one evaluator per task, run through lm-eval itself.

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
from softpick_bench.eval.harness.tasks import HARNESS_TASKS, SOURCES, data_manifest
from softpick_bench.eval.tasks import EvalTarget, Metric, TaskOption, TaskSpec, register_task

log = logging.getLogger(__name__)

OPTIONS = {
    "limit": TaskOption(int, None, "evaluate only the first N documents (None = all)"),
    "num_fewshot": TaskOption(int, 0, "few-shot examples (the paper is zero-shot; >0 needs source 'hub')"),
    "batch_size": TaskOption(int, 32, "most requests per forward pass"),
    "batch_tokens": TaskOption(int, None, "most padded tokens per forward pass (None = no budget)"),
    "max_length": TaskOption(int, None, "context window in tokens (None = the model's max_position_embeddings)"),
    "source": TaskOption(str, "local", "'local': shipped data through our YAMLs; 'hub': lm-eval's hub tasks"),
    "bootstrap_iters": TaskOption(int, 100000, "bootstrap resamples for stderrs lm-eval bootstraps (perplexity)"),
}


def _number(value) -> float | None:
    """lm-eval writes 'N/A' (or nothing) where it has no standard error."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def run_harness_task(target: EvalTarget, spec: TaskSpec) -> list[Metric]:
    import lm_eval
    from lm_eval import simple_evaluate

    from softpick_bench.eval.harness.bridge import BenchLM
    from softpick_bench.eval.harness.tasks import task_manager

    opts = dict(spec.options)
    name, source = spec.name, opts["source"]
    if source not in SOURCES:
        raise TaskError(f"task {name!r}: source {source!r} unknown; valid: {', '.join(SOURCES)}")
    if source == "local" and opts["num_fewshot"] != 0:
        raise TaskError(
            f"task {name!r}: num_fewshot={opts['num_fewshot']} needs the training split, which is not shipped; "
            "use num_fewshot 0 or source 'hub'"
        )
    lm_name = HARNESS_TASKS[name].lm_eval_name
    lm = BenchLM(
        target.model,
        target.tokenizer,
        batch_size=opts["batch_size"],
        batch_tokens=opts["batch_tokens"],
        max_length=opts["max_length"],
    )
    seed = target.seed
    start = time.perf_counter()
    out = simple_evaluate(
        model=lm,
        tasks=[lm_name],
        task_manager=task_manager(source),
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
    seconds = time.perf_counter() - start
    res = out["results"][lm_name]
    details = {
        "lm_eval_task": lm_name,
        "lm_eval_version": lm_eval.__version__,
        "task_version": out["versions"].get(lm_name),
        "source": source,
        "num_fewshot": opts["num_fewshot"],
        "limit": opts["limit"],
        "documents": out["n-samples"][lm_name]["effective"],
        "documents_total": out["n-samples"][lm_name]["original"],
        "batch_size": opts["batch_size"],
        "batch_tokens": opts["batch_tokens"],
        "max_length": lm.max_length,
        "seed": seed,
        "bootstrap_iters": opts["bootstrap_iters"],
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
    if source == "local":
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
        raise TaskError(f"task {name!r}: lm-eval returned no metrics ({sorted(res)})")
    return metrics


for _name, _task in HARNESS_TASKS.items():
    register_task(
        _name,
        options=OPTIONS,
        description=f"lm-eval {_task.lm_eval_name} (official task definition; zero-shot on shipped data by default)",
    )(run_harness_task)
