"""WikiText-2 perplexity in the GPTQ-paper convention.

Join the raw test rows with "\\n\\n", tokenize once, cut into non-overlapping windows of
`seq_len` tokens (the tail shorter than a window is dropped, as GPTQ does), and take
the mean negative log-likelihood over every predicted token of every window. This is
not lm-eval's document-level word perplexity; the metric is named `ppl_gptq` so the two
never share a name.
"""

from __future__ import annotations

import gzip
import math
from importlib import resources

import torch
import torch.nn.functional as F

from softpick_bench.eval.tasks import EvalTarget, Metric, TaskOption, TaskSpec, register_task
from softpick_bench.models.checkpoint import vocab_digest


def wikitext2_test_rows() -> list[str]:
    """The hub's wikitext-2-raw-v1 test rows: a blank line is "", others keep their newline."""
    raw = resources.files("softpick_bench.data").joinpath("wikitext-2/wiki.test.raw.gz").read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").splitlines(keepends=True)
    return ["" if line.strip() == "" else line for line in lines]


def tokenizer_id(tokenizer) -> str:
    """Name and a hash of the vocabulary: tokens counts only compare under the same tokenizer."""
    return f"{getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}#{vocab_digest(tokenizer)}"


_TOKENIZED: dict[str, torch.Tensor] = {}


def _tokenized_test_text(tokenizer) -> torch.Tensor:
    """The joined test text tokenized once per tokenizer per process (every cell reuses it)."""
    key = tokenizer_id(tokenizer)
    if key not in _TOKENIZED:
        text = "\n\n".join(wikitext2_test_rows())
        _TOKENIZED[key] = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    return _TOKENIZED[key]


def windowed_nll(model, ids: torch.Tensor, seq_len: int, batch_size: int, device: str) -> tuple[float, int, int]:
    """(summed NLL, predicted tokens, windows) over non-overlapping windows of `ids`."""
    n_windows = ids.numel() // seq_len
    windows = ids[: n_windows * seq_len].view(n_windows, seq_len)
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, n_windows, batch_size):
            batch = windows[start : start + batch_size].to(device)
            logits = model(input_ids=batch).logits[:, :-1].float()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
            total += float(nll)
            count += batch[:, 1:].numel()
    return total, count, n_windows


@register_task(
    "wikitext2",
    options={
        "seq_len": TaskOption(int, 2048, "window length in tokens"),
        "batch_size": TaskOption(int, 8, "windows per forward pass"),
        "max_windows": TaskOption(int, None, "evaluate only the first N windows (None = all)"),
    },
    description="WikiText-2 raw test perplexity, GPTQ convention (metric ppl_gptq)",
)
def wikitext2_perplexity(target: EvalTarget, spec: TaskSpec) -> list[Metric]:
    seq_len, batch_size, max_windows = spec.option("seq_len"), spec.option("batch_size"), spec.option("max_windows")
    ids = _tokenized_test_text(target.tokenizer)
    total_tokens = ids.numel()
    if max_windows is not None:
        ids = ids[: max_windows * seq_len]
    if ids.numel() < seq_len:
        raise ValueError(f"wikitext2: {ids.numel()} tokens is less than one window of {seq_len}")
    nll, count, windows = windowed_nll(target.model, ids, seq_len, batch_size, target.device)
    mean = nll / count
    details = {
        "mean_nll": mean,
        "seq_len": seq_len,
        "windows": windows,
        "predicted_tokens": count,
        "dataset_tokens": total_tokens,
        "tokenizer": tokenizer_id(target.tokenizer),
        "convention": "gptq: rows joined with \\n\\n, non-overlapping windows, mean NLL over predicted tokens",
    }
    return [Metric("ppl_gptq", math.exp(mean), None, higher_is_better=False, details=details)]
