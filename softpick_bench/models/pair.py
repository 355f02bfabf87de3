"""Pair check: two checkpoints may differ in attention and in nothing else that matters."""

from __future__ import annotations

from softpick_bench.errors import PairMismatchError
from softpick_bench.models.checkpoint import LoadedModel

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


def _architecture(loaded: LoadedModel) -> dict:
    return {k: v for k, v in sorted(loaded.model.config.to_dict().items()) if k not in _IGNORED}


def check_pair(a: LoadedModel, b: LoadedModel) -> None:
    """Raise PairMismatchError naming the first difference in architecture or tokenizer."""
    ca, cb = _architecture(a), _architecture(b)
    for key in sorted(set(ca) | set(cb)):
        if ca.get(key, "<absent>") != cb.get(key, "<absent>"):
            raise PairMismatchError(
                f"pair {a.source} / {b.source}: architecture differs first at config key {key!r}: "
                f"{ca.get(key, '<absent>')!r} vs {cb.get(key, '<absent>')!r}"
            )
    ta, tb = a.tokenizer, b.tokenizer
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        if getattr(ta, attr, None) != getattr(tb, attr, None):
            raise PairMismatchError(
                f"pair {a.source} / {b.source}: tokenizers differ at {attr}: "
                f"{getattr(ta, attr, None)!r} vs {getattr(tb, attr, None)!r}"
            )
    va, vb = ta.get_vocab(), tb.get_vocab()
    if len(va) != len(vb):
        raise PairMismatchError(
            f"pair {a.source} / {b.source}: tokenizer vocabularies differ in size: {len(va)} vs {len(vb)}"
        )
    for token in sorted(va):
        if vb.get(token) != va[token]:
            raise PairMismatchError(
                f"pair {a.source} / {b.source}: tokenizers differ first at token {token!r}: "
                f"id {va[token]} vs {vb.get(token, '<absent>')}"
            )
