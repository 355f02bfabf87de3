"""The sweep-level request cache: lm-eval's requests for a task, built and tokenized once, scored for
every model of the sweep.

What lm-eval does before and after the forward pass (load documents, render prompts, build
`Instance`s, tokenize) depends on the task, its options and the tokenizer, never on the model, yet
`simple_evaluate` redoes it for every model. Here it happens once per `request_key` (task, the
options that shape requests, tokenizer, max length, lm-eval version, data digest) and process:
- `prepare` loads the task, builds its instances with lm-eval's own `build_all_requests` (the
  same seeds as `simple_evaluate`) and tokenizes them with HFLM's own code (its `loglikelihood` /
  `loglikelihood_rolling` run once with the scoring loop replaced by a recorder, so the token
  lists are exactly what HFLM would score). The token lists are also written to
  `<cache_dir>/<key>.json.gz`, so a resumed sweep skips tokenization; a stored file whose request
  digest differs from the rebuilt requests is rebuilt, never trusted.
- `CachedLM.loglikelihood*` score those token lists on a model, in the same order and the same
  batches as HFLM, through BenchLM's scoring loop.
- the metrics then come from lm-eval's own `evaluate` (filters, per-document `process_results`,
  aggregation, stderr), with the already built instances reused.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lm_eval.models.huggingface import HFLM

from softpick_bench.eval.harness.bridge import BenchLM
from softpick_bench.models.checkpoint import vocab_digest

CACHE_FORMAT = 1

# How many times lm-eval's request construction ran, per request key (tests count it).
BUILDS: Counter = Counter()
# How many times the tokenized requests were read back from a cache file instead of tokenized.
LOADED_FROM_DISK: Counter = Counter()

_PREPARED: dict[str, PreparedTask] = {}


@dataclass
class PreparedTask:
    key: str
    lm_name: str
    task_dict: dict  # TaskManager.load(...) output, the task's instances built
    limit: int | None
    encodings: list  # per instance, in task.instances order: (ctx, cont), or a list of them (rolling)

    @property
    def task(self):
        return self.task_dict["tasks"][self.lm_name]


def tokenizer_signature(tokenizer) -> dict:
    """What, besides the vocabulary, decides how HFLM tokenizes: special tokens and their use."""
    return {
        "class": type(tokenizer).__name__,
        "vocab": vocab_digest(tokenizer),
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "add_bos": getattr(tokenizer, "add_bos_token", None),
    }


def request_key(lm_name: str, request_options: dict, tokenizer, max_length: int, data_digest: str | None) -> str:
    import lm_eval

    payload = {
        "format": CACHE_FORMAT,
        "task": lm_name,
        "options": request_options,
        "tokenizer": tokenizer_signature(tokenizer),
        "max_length": max_length,
        "lm_eval": lm_eval.__version__,
        "data": data_digest,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def set_seeds(seed: int) -> None:
    """The seeds simple_evaluate sets before it loads tasks (python, numpy, torch)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _requests_digest(instances) -> str:
    h = hashlib.sha256()
    for inst in instances:
        h.update(json.dumps([inst.request_type, inst.doc_id, inst.idx, list(inst.args)], default=str).encode())
    return h.hexdigest()


def _tokenize(lm: BenchLM, instances) -> list:
    """HFLM's own tokenization of each instance, captured by replacing its scoring loop with a recorder."""
    recorded: list = []

    def recorder(requests, disable_tqdm=False, override_bs=None):
        recorded.extend(requests)
        return [(1.0, False)] * len(requests)  # rolling: a document's total is then its window count

    by_type: dict[str, list] = {}
    for inst in instances:
        by_type.setdefault(inst.request_type, []).append(inst)
    unknown = set(by_type) - {"loglikelihood", "loglikelihood_rolling"}
    if unknown:
        raise ValueError(f"request types {sorted(unknown)} are not scored by softpick-bench (log-likelihood only)")
    encoding: dict[int, Any] = {}
    lm._loglikelihood_tokens = recorder  # instance attribute: shadows the method for this call only
    try:
        if "loglikelihood" in by_type:
            recorded.clear()
            HFLM.loglikelihood(lm, by_type["loglikelihood"], disable_tqdm=True)
            for inst, (_, ctx, cont) in zip(by_type["loglikelihood"], recorded, strict=True):
                encoding[id(inst)] = (list(ctx), list(cont))
        if "loglikelihood_rolling" in by_type:
            recorded.clear()
            counts = HFLM.loglikelihood_rolling(lm, by_type["loglikelihood_rolling"], disable_tqdm=True)
            start = 0
            for inst, count in zip(by_type["loglikelihood_rolling"], counts, strict=True):
                n = int(count)
                encoding[id(inst)] = [(list(c), list(t)) for _, c, t in recorded[start : start + n]]
                start += n
            if start != len(recorded):
                raise RuntimeError(f"rolling windows: {len(recorded)} recorded, {start} assigned")
    finally:
        del lm._loglikelihood_tokens
    return [encoding[id(inst)] for inst in instances]


def _read_cached(path: Path, digest: str) -> list | None:
    try:
        stored = json.loads(gzip.decompress(path.read_bytes()))
    except (OSError, ValueError, EOFError):
        return None  # unreadable or truncated: tokenize again and overwrite
    if stored.get("format") != CACHE_FORMAT or stored.get("requests_digest") != digest:
        return None
    return stored["encodings"]


def _write_cached(path: Path, digest: str, encodings: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = gzip.compress(
        json.dumps({"format": CACHE_FORMAT, "requests_digest": digest, "encodings": encodings}).encode(), mtime=0
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json.gz")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare(
    lm_name: str,
    task_manager,
    lm: BenchLM,
    *,
    num_fewshot: int,
    limit: int | None,
    seed: int,
    key: str,
    cache_dir: str | Path | None = None,
) -> PreparedTask:
    """The task's requests, built and tokenized once per key (memoised in this process)."""
    from lm_eval.evaluator_utils import get_sample_size

    if key in _PREPARED:
        return _PREPARED[key]
    set_seeds(seed)
    task_dict = task_manager.load([lm_name])
    task = task_dict["tasks"][lm_name]
    if task.get_config("num_fewshot") != 0 or num_fewshot:
        task.set_config(key="num_fewshot", value=num_fewshot)
    task.set_fewshot_seed(seed=seed)
    sample_limit = get_sample_size(task, limit)
    task.build_all_requests(limit=sample_limit, rank=0, world_size=1)
    BUILDS[key] += 1
    instances = task.instances
    digest = _requests_digest(instances)
    path = Path(cache_dir) / f"{key}.json.gz" if cache_dir else None
    encodings = _read_cached(path, digest) if path is not None and path.is_file() else None
    if encodings is None:
        encodings = _tokenize(lm, instances)
        if path is not None:
            _write_cached(path, digest, encodings)
    else:
        LOADED_FROM_DISK[key] += 1
    task.build_all_requests = _already_built  # evaluate() reuses the instances built above
    prepared = PreparedTask(key, lm_name, task_dict, limit, encodings)
    _PREPARED[key] = prepared
    return prepared


def _already_built(**_kwargs) -> None:
    return None


def forget_prepared() -> None:
    """Drop the in-process cache (tests; a long-lived process that changed tasks)."""
    _PREPARED.clear()


class CachedLM(BenchLM):
    """BenchLM that scores prepared token lists instead of tokenizing each request again."""

    def attach(self, prepared: PreparedTask) -> None:
        instances = prepared.task.instances
        for inst in instances:  # a fresh model: no responses from the previous cell
            inst.resps = []
            inst.filtered_resps = {}
        self._encoding_of = {id(inst): enc for inst, enc in zip(instances, prepared.encodings, strict=True)}

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        tokens = [(req.args, *self._encoding_of[id(req)]) for req in requests]
        return self._loglikelihood_tokens(tokens, disable_tqdm=True)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        # HFLM's order and batches: every document's windows in turn, batch_size windows per call
        windows, counts = [], []
        for req in requests:
            doc_windows = self._encoding_of[id(req)]
            windows += [(None, ctx, cont) for ctx, cont in doc_windows]
            counts.append(len(doc_windows))
        scored = []
        for i in range(0, len(windows), self.batch_size):
            batch = windows[i : i + self.batch_size]
            scored += self._loglikelihood_tokens(batch, disable_tqdm=True, override_bs=len(batch))
        totals, start = [], 0
        for n in counts:
            totals.append(sum(ll for ll, _ in scored[start : start + n]))
            start += n
        return totals
