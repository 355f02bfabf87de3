"""Per-item results: the values a metric is aggregated from, kept so that two models scored on
the same items can be compared pairwise (McNemar, paired bootstrap) without re-running anything.

Every finished evaluation cell may carry one `Items` payload, stored beside its record as
`cells/<key>.items.json.gz` (strict JSON, gzip). Its shape:

    {"format": 1, "task": "arc_easy",
     "metrics": {
        "acc":  {"aggregation": "mean", "ids": [0, 1, ...], "values": [1.0, 0.0, ...]},
        "perplexity": {"aggregation": "perplexity", "ids": [...], "values": [loglik, ...]},
        "word_perplexity": {"aggregation": "weighted_perplexity", "ids": [...],
                            "values": [[loglik, words], ...]},
        "ppl_gptq": {"aggregation": "weighted_perplexity", "ids": [window, ...],
                     "values": [[-nll_sum, predicted_tokens], ...]}}}

`ids` name the items (lm-eval's doc_id, or the window index), so two cells are paired by id.
`aggregation` is lm-eval's name for how the per-item values become the metric; `aggregate`
reproduces each metric from its items exactly as lm-eval's aggregation functions do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

FORMAT = 1
AGGREGATIONS = ("mean", "perplexity", "weighted_perplexity", "bits_per_byte")


def aggregate(aggregation: str, values: Sequence) -> float:
    """The metric from its per-item values (lm-eval's definitions)."""
    if not len(values):
        raise ValueError("no items to aggregate")
    if aggregation == "mean":
        return math.fsum(values) / len(values)
    if aggregation == "perplexity":  # exp of the mean negative log-likelihood per item
        return math.exp(-math.fsum(values) / len(values))
    if aggregation in ("weighted_perplexity", "bits_per_byte"):
        loglik = math.fsum(v[0] for v in values)
        weight = math.fsum(v[1] for v in values)
        if aggregation == "weighted_perplexity":
            return math.exp(-loglik / weight)
        return -loglik / weight / math.log(2)
    raise ValueError(f"aggregation {aggregation!r} unknown; valid: {', '.join(AGGREGATIONS)}")


def metric_items(aggregation: str, ids: Sequence, values: Sequence) -> dict:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation {aggregation!r} unknown; valid: {', '.join(AGGREGATIONS)}")
    if len(ids) != len(values):
        raise ValueError(f"{len(ids)} ids for {len(values)} values")
    return {"aggregation": aggregation, "ids": list(ids), "values": [_plain(v) for v in values]}


def payload(task: str, metrics: dict[str, dict]) -> dict:
    return {"format": FORMAT, "task": task, "metrics": metrics}


def _plain(v):
    """Python floats (or pairs of them), so json writes them exactly and strictly."""
    if isinstance(v, (list, tuple)):
        return [float(x) for x in v]
    return float(v)
