"""Pair check: two checkpoints may differ in attention and in nothing else that matters.

Runs on configs and tokenizers only, so a mismatched pair is refused before any
weights are read.
"""

from __future__ import annotations

from softpick_bench.errors import PairMismatchError
from softpick_bench.models.checkpoint import architecture, load_tokenizer, resolve_folder

# config fields that may differ between the two sides of a pair
_IGNORED = {
    "attention_kind",
    "_attn_implementation",
    "_attn_implementation_internal",
    "_name_or_path",
    "name_or_path",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "architectures",
    "training",  # training metadata (loss, steps) written by the trainer
}


def _first_difference(a: dict, b: dict) -> tuple[str, object, object] | None:
    for key in sorted(set(a) | set(b)):
        if key in _IGNORED:
            continue
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if va != vb:
            return key, va, vb
    return None


def compare(arch_a: dict, tok_a, arch_b: dict, tok_b) -> str | None:
    """None if the two are a valid pair, else a sentence naming the first difference."""
    diff = _first_difference(arch_a, arch_b)
    if diff:
        return f"architecture differs first at config key {diff[0]!r}: {diff[1]!r} vs {diff[2]!r}"
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        if getattr(tok_a, attr, None) != getattr(tok_b, attr, None):
            return f"tokenizers differ at {attr}: {getattr(tok_a, attr, None)!r} vs {getattr(tok_b, attr, None)!r}"
    va, vb = tok_a.get_vocab(), tok_b.get_vocab()
    if len(va) != len(vb):
        return f"tokenizer vocabularies differ in size: {len(va)} vs {len(vb)}"
    for token in sorted(va):
        if vb.get(token) != va[token]:
            return f"tokenizers differ first at token {token!r}: id {va[token]} vs {vb.get(token, '<absent>')}"
    return None


def check_pair(source_a: str, source_b: str) -> None:
    """Raise PairMismatchError naming the first difference in architecture or tokenizer."""
    folders = [resolve_folder(s) for s in (source_a, source_b)]
    archs = [architecture(f, str(s)) for f, s in zip(folders, (source_a, source_b))]
    toks = [load_tokenizer(f) for f in folders]
    problem = compare(archs[0], toks[0], archs[1], toks[1])
    if problem:
        raise PairMismatchError(f"pair {source_a} / {source_b}: {problem}")
