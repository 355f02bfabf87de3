"""The paper's analysis metrics (PAPER.md section 4) from real forward passes.

For a few unpadded sample sequences (bos + text from a file that is no evaluation set),
the model runs once per sample with its attention computed by the materialised reference
on the model's OWN kind (and its attention hooks, so KV or probability quantization is in
force), which exposes the attention maps and each head's output:

- sink_rate_0.2 / sink_rate_0.3: per sample, the fraction of (layer, head) pairs whose mean
  attention to the first token, over all query positions (every position of an unpadded
  sample is a valid query), exceeds eps; averaged over samples (Gu et al. 2024). The
  metric depends on the sample length (a uniform head gives H_T / T to the first token:
  0.074 at T = 64, 0.013 at T = 512); the defaults follow Gu et al.'s released evaluation
  (sink_metric on the first 64 tokens of 100 samples), and details record T.
- kurtosis: Pearson (not excess) kurtosis mu4 / mu2^2 over all values of all hidden states:
  the embedding output and every decoder layer's output (before the final norm);
  hidden_min / hidden_max over the same values.
- attn_sparsity: fraction of exact zeros among the attention weights of the causal lower
  triangle (diagonal included), over all layers, heads and samples.
- dead_heads: fraction of (layer, head) pairs whose output (the head's attention output
  before o_proj) has max-abs < 1e-6 on at least 95% of tokens.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from softpick_bench.eval.declared import ANALYSIS_SOURCE as DEFAULT_SOURCE
from softpick_bench.eval.tasks import EvalTarget, Metric, TaskSpec, implements
from softpick_bench.kernels import reference
from softpick_bench.models.attention import HOOKS_ATTR

SINK_EPS = (0.2, 0.3)
DEAD_THRESHOLD = 1e-6
DEAD_TOKEN_FRACTION = 0.95


class MomentAccumulator:
    """Streaming count, min, max and central moments up to 4 (float64, shifted sums).

    The shift is the mean of the first chunk: kurtosis is shift-invariant, and summing
    powers of (x - shift) avoids the cancellation raw moments suffer when |mean| >> std.
    """

    def __init__(self) -> None:
        self.n = 0
        self.shift: float | None = None
        self.sums = [0.0, 0.0, 0.0, 0.0]
        self.min = float("inf")
        self.max = float("-inf")

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1).to(torch.float64)
        if x.numel() == 0:
            return
        if self.shift is None:
            self.shift = float(x.mean())
        y = x - self.shift
        y2 = y * y
        self.sums = [s + float(t.sum()) for s, t in zip(self.sums, (y, y2, y2 * y, y2 * y2))]
        self.n += x.numel()
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))

    def kurtosis(self) -> float:
        if self.n == 0:
            raise ValueError("no values")
        m1, m2, m3, m4 = (s / self.n for s in self.sums)
        var = m2 - m1 * m1
        mu4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1**4
        return mu4 / (var * var) if var > 0 else float("nan")


@dataclass
class AttentionStats:
    """Per-sample sink masses and running sparsity / dead-head counts."""

    sink_mass: list[list[torch.Tensor]] = field(default_factory=list)  # [sample][layer] -> (H,)
    zeros: int = 0
    triangle: int = 0
    silent_tokens: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (H,) count
    tokens: dict[int, int] = field(default_factory=dict)  # layer -> tokens seen

    def new_sample(self) -> None:
        self.sink_mass.append([])

    def add(self, layer: int, weights: torch.Tensor, valid: torch.Tensor, out: torch.Tensor) -> None:
        """weights (1, H, Q, K); valid bool (1, 1|H, Q, K); out (1, H, Q, D) head outputs."""
        valid = valid.expand_as(weights)
        query_ok = valid.any(dim=-1)  # (1, H, Q)
        first = (weights[..., 0] * query_ok).sum(-1) / query_ok.sum(-1).clamp_min(1)  # (1, H)
        self.sink_mass[-1].append(first[0].double().cpu())
        self.zeros += int(((weights == 0) & valid).sum())
        self.triangle += int(valid.sum())
        silent = (out.abs().amax(dim=-1) < DEAD_THRESHOLD) & query_ok  # (1, H, Q)
        self.silent_tokens[layer] = self.silent_tokens.get(layer, 0) + silent.sum(dim=(0, 2)).cpu()
        self.tokens[layer] = self.tokens.get(layer, 0) + int(query_ok[0, 0].sum())

    def sink_rate(self, eps: float) -> float:
        rates = [float((torch.stack(layers) > eps).double().mean()) for layers in self.sink_mass]
        return float(np.mean(rates))

    def dead_heads(self) -> tuple[float, int, int]:
        flags = torch.stack([self.silent_tokens[l] / self.tokens[l] >= DEAD_TOKEN_FRACTION for l in sorted(self.tokens)])
        return float(flags.double().mean()), int(flags.sum()), flags.numel()

    def per_layer_sink(self, eps: float) -> list[float]:
        per = torch.stack([torch.stack(layers) for layers in self.sink_mass])  # (S, L, H)
        return [round(float(v), 4) for v in (per > eps).double().mean(dim=(0, 2))]

    def per_layer_first_mass(self) -> list[float]:
        """Mean attention to the first token per layer (over samples and heads): sinks below eps show here."""
        per = torch.stack([torch.stack(layers) for layers in self.sink_mass])  # (S, L, H)
        return [round(float(v), 4) for v in per.mean(dim=(0, 2))]


def _mask_fn(*args, **kwargs):
    kwargs["allow_is_causal_skip"] = False
    kwargs["allow_is_bidirectional_skip"] = False
    return sdpa_mask(*args, **kwargs)


def _register_analysis_attention(kind: str, stats: AttentionStats) -> str:
    """An attention name computing `kind` by the reference and recording into `stats`."""
    name = f"sb_analysis_{kind}"

    def attention_fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        hooks = getattr(module, HOOKS_ATTR, None)
        if hooks is not None and hooks.kv is not None:
            key, value = hooks.kv(key, value)
        k_len = key.shape[-2]
        mask = None if attention_mask is None else attention_mask[:, :, :, :k_len]
        causal = reference.causal_mask(query.shape[-2], k_len, query.device)[None, None]
        valid = causal if mask is None else (mask & causal)
        out, weights = reference.attention(
            query, key, value, kind=kind, mask=valid, scale=scaling, return_weights=True,
            probs_transform=None if hooks is None else hooks.probs,
        )
        stats.add(module.layer_idx, weights, valid, out)
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register(name, attention_fn)
    AttentionMaskInterface.register(name, _mask_fn)
    return name


def _decoder(model: torch.nn.Module):
    base = getattr(model, "model", model)
    if not hasattr(base, "embed_tokens") or not hasattr(base, "layers"):
        raise TypeError(f"analysis needs a Llama-style decoder (embed_tokens, layers); got {type(base).__name__}")
    return base


def source_documents(source: str) -> tuple[list[str], str]:
    """Documents of the sample text and a short hash of its bytes."""
    if source == DEFAULT_SOURCE:
        raw = resources.files("softpick_bench.data").joinpath("corpus-heldout/heldout.txt.gz").read_bytes()
    else:
        raw = Path(source).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    docs = [d for d in raw.decode("utf-8").rstrip("\n").split("\n\f\n") if d.strip()]
    return docs, hashlib.sha256(raw).hexdigest()[:12]


def sample_sequences(
    tokenizer, docs: list[str], n_samples: int, seq_len: int, seed: int, prepend_bos: bool = True
) -> torch.Tensor:
    """(n, seq_len) token rows: bos (if asked and the tokenizer has one) + text from seeded offsets.

    Without bos the first token is an arbitrary text token: this separates a sink on the first
    position from heads that attend to a document's bos token.
    """
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for doc in docs:
        stream += tokenizer(doc, add_special_tokens=False).input_ids + ([eos] if eos is not None else [])
    bos = [tokenizer.bos_token_id] if prepend_bos and tokenizer.bos_token_id is not None else []
    body = seq_len - len(bos)
    if len(stream) < body * n_samples:
        raise ValueError(f"sample text has {len(stream)} tokens, fewer than {n_samples} x {body}")
    windows = np.random.default_rng(seed).permutation(len(stream) // body)[:n_samples]
    return torch.tensor([bos + stream[w * body : (w + 1) * body] for w in sorted(windows)])


@torch.no_grad()
def analyse(model: torch.nn.Module, kind: str, rows: torch.Tensor, device: str) -> tuple[dict, dict]:
    """(values, details) of the analysis metrics over `rows`, one sample per forward pass."""
    stats = AttentionStats()
    moments = MomentAccumulator()
    base = _decoder(model)
    handles = [base.embed_tokens.register_forward_hook(lambda m, i, o: moments.add(o))]
    for layer in base.layers:
        handles.append(layer.register_forward_hook(lambda m, i, o: moments.add(o[0] if isinstance(o, tuple) else o)))
    config = model.config
    previous = config._attn_implementation
    config._attn_implementation = _register_analysis_attention(kind, stats)
    try:
        for row in rows:
            stats.new_sample()
            model(input_ids=row[None].to(device))
    finally:
        config._attn_implementation = previous
        for h in handles:
            h.remove()
    dead_frac, dead_count, heads = stats.dead_heads()
    values = {
        "sink_rate_0.2": stats.sink_rate(0.2),
        "sink_rate_0.3": stats.sink_rate(0.3),
        "kurtosis": moments.kurtosis(),
        "hidden_min": moments.min,
        "hidden_max": moments.max,
        "attn_sparsity": stats.zeros / stats.triangle,
        "dead_heads": dead_frac,
    }
    details = {
        "n_samples": int(rows.shape[0]),
        "seq_len": int(rows.shape[1]),
        "hidden_values": moments.n,
        "heads_total": heads,
        "dead_heads_count": dead_count,
        "sink_rate_0.3_per_layer": stats.per_layer_sink(0.3),
        "first_token_mass_per_layer": stats.per_layer_first_mass(),
        "attention": f"reference, kind {kind}",
    }
    return values, details


HIGHER_IS_BETTER = {"sink_rate_0.2": None, "sink_rate_0.3": None, "kurtosis": None, "hidden_min": None,
                    "hidden_max": None, "attn_sparsity": None, "dead_heads": None}


@implements("analysis")  # options: eval/declared.py
def analysis_task(target: EvalTarget, spec: TaskSpec) -> list[Metric]:
    docs, digest = source_documents(spec.option("source"))
    rows = sample_sequences(target.tokenizer, docs, spec.option("n_samples"), spec.option("seq_len"),
                            spec.option("seed"), spec.option("prepend_bos"))
    values, details = analyse(target.model, target.kind, rows, target.device)
    details.update(source=spec.option("source"), source_sha256_12=digest, seed=spec.option("seed"),
                   prepend_bos=spec.option("prepend_bos"))
    return [Metric(name, value, None, higher_is_better=HIGHER_IS_BETTER[name], details=details)
            for name, value in values.items()]


def analyse_checkpoint(
    folder: Path, device: str = "cpu", n_samples: int = 100, seq_len: int = 64, prepend_bos: bool = True
) -> dict:
    """Load a checkpoint and return {"values", "details"} of the analysis task (float32 weights)."""
    from softpick_bench.eval.tasks import make_spec
    from softpick_bench.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(folder, dtype="float32", device=device)
    target = EvalTarget(model=loaded.model, tokenizer=loaded.tokenizer, kind=loaded.kind, device=device)
    spec = make_spec("analysis", {"n_samples": n_samples, "seq_len": seq_len, "prepend_bos": prepend_bos})
    metrics = analysis_task(target, spec)
    return {"values": {m.metric: m.value for m in metrics}, "details": metrics[0].details}
