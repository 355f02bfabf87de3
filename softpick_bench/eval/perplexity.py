"""WikiText-2 perplexity in the GPTQ-paper convention.

Join the raw test rows with "\\n\\n", tokenize once, cut into non-overlapping windows of
`seq_len` tokens (the tail shorter than a window is dropped, as GPTQ does), and take
the mean negative log-likelihood over every predicted token of every window. This is
not lm-eval's document-level word perplexity; the metric is named `ppl_gptq` so the two
never share a name.

Where the model allows it (models.attention.packing_problem: a Llama running one of our attention
kinds, no attention hooks) a batch of windows runs as one packed row with cu_seq_lens, as the
lm-eval bridge's packed loop does: the same causal attention within each window, but no (B, 1, T, T)
mask is built and analysed in every layer. `PACKING = "off"` (a benchmark's switch) keeps the
padded batches; the record's `attention_path` says which ran.
"""

from __future__ import annotations

import gzip
import math
from importlib import resources

import torch
import torch.nn.functional as F

from softpick_bench.eval import items
from softpick_bench.eval.tasks import EvalTarget, Metric, TaskOutput, TaskSpec, implements
from softpick_bench.models.attention import has_attention_hooks, packed_hidden_states, packing_problem
from softpick_bench.models.checkpoint import vocab_digest
from softpick_bench.models.fused import scoring_forward


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


PACKING = "auto"  # "auto": packed rows where the model allows it; "off": padded batches always


def attention_path(model) -> str:
    """'packed' or 'padded': how `window_nlls` batches windows on this model."""
    if PACKING == "off" or packing_problem(model) is not None or has_attention_hooks(model):
        return "padded"
    return "packed"


def _packed_logits(model, batch: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, V) of B windows run as one packed row (each window attends to itself only)."""
    b, t = batch.shape
    device = batch.device
    cu = torch.arange(0, (b + 1) * t, t, device=device, dtype=torch.int32)
    positions = torch.arange(t, device=device).repeat(b)
    hidden = packed_hidden_states(model, batch.reshape(b * t), positions, cu, t)
    return model.get_output_embeddings()(hidden).view(b, t, -1)


def window_nlls(model, ids: torch.Tensor, seq_len: int, batch_size: int, device: str,
                path: str | None = None) -> list[float]:
    """Summed NLL of each non-overlapping window of `ids` (seq_len - 1 predicted tokens each);
    `path` as `attention_path(model)` gives it (computed when None)."""
    n_windows = ids.numel() // seq_len
    windows = ids[: n_windows * seq_len].view(n_windows, seq_len)
    packed = (path or attention_path(model)) == "packed"
    sums: list[float] = []
    with torch.inference_mode():
        for start in range(0, n_windows, batch_size):
            batch = windows[start : start + batch_size].to(device)
            logits = _packed_logits(model, batch) if packed else model(input_ids=batch).logits
            logits = logits[:, :-1].float()
            nll = F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none").sum(dim=1)
            sums += nll.double().cpu().tolist()
    return sums


@implements("wikitext2")  # options: eval/declared.py
def wikitext2_perplexity(target: EvalTarget, spec: TaskSpec) -> TaskOutput:
    seq_len, batch_size, max_windows = spec.option("seq_len"), spec.option("batch_size"), spec.option("max_windows")
    ids = _tokenized_test_text(target.tokenizer)
    total_tokens = ids.numel()
    if max_windows is not None:
        ids = ids[: max_windows * seq_len]
    if ids.numel() < seq_len:
        raise ValueError(f"wikitext2: {ids.numel()} tokens is less than one window of {seq_len}")
    path = attention_path(target.model)
    with scoring_forward(target.model, spec.option("forward")):
        sums = window_nlls(target.model, ids, seq_len, batch_size, target.device, path)
    windows, per_window = len(sums), seq_len - 1
    count = windows * per_window
    mean = math.fsum(sums) / count
    details = {
        "mean_nll": mean,
        "seq_len": seq_len,
        "windows": windows,
        "predicted_tokens": count,
        "dataset_tokens": total_tokens,
        "tokenizer": tokenizer_id(target.tokenizer),
        "forward": spec.option("forward"),
        "attention_path": path,
        "convention": "gptq: rows joined with \\n\\n, non-overlapping windows, mean NLL over predicted tokens",
    }
    metric = Metric("ppl_gptq", math.exp(mean), None, higher_is_better=False, details=details)
    per_item = items.metric_items("weighted_perplexity", list(range(windows)), [(-s, per_window) for s in sums])
    return TaskOutput([metric], items.payload("wikitext2", {"ppl_gptq": per_item}))
