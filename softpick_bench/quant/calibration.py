"""Calibration token windows: seeded random windows of a text that is not an evaluation set.

The default source is the Gutenberg slice shipped with the package (data/calibration/SOURCE.md);
any other .txt / .txt.gz file may be named, but never one of the evaluation sets.
What was used (source, hash, count, length, seed) is recorded, so a result row can name it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
from importlib import resources
from pathlib import Path

import torch

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.models.checkpoint import vocab_digest
from softpick_bench.quant.declared import DEFAULT_CALIBRATION as DEFAULT_SOURCE

# folder names of the evaluation data: calibration on them would leak the test set
EVAL_SET_NAMES = ("wikitext", "lambada", "arc", "hellaswag", "piqa", "sciq", "boolq", "winogrande", "openbookqa")


def _source_path(source: str) -> Path:
    if source == DEFAULT_SOURCE:
        return Path(str(resources.files("softpick_bench") / "data" / "calibration" / "gutenberg_slice.txt.gz"))
    path = Path(source).expanduser()
    lowered = str(path).lower()
    bad = [name for name in EVAL_SET_NAMES if name in lowered]
    if bad:
        raise UnsupportedQuantError(
            f"calibration source {source!r} looks like an evaluation set ({bad[0]}); use training text"
        )
    if not path.is_file():
        raise UnsupportedQuantError(
            f"calibration source {source!r} is not a file; valid: {DEFAULT_SOURCE!r} or a .txt/.txt.gz path"
        )
    return path


def _read_text(path: Path) -> str:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read()


@functools.lru_cache(maxsize=4)
def _tokens(path: str, tokenizer_key: str, tokenizer) -> tuple[torch.Tensor, str]:
    """Token ids of the whole source (cached per source and tokenizer) and the text's sha256."""
    text = _read_text(Path(path))
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    return ids, hashlib.sha256(text.encode()).hexdigest()


def calibration_windows(
    tokenizer, n_sequences: int, seq_len: int, seed: int, source: str = DEFAULT_SOURCE
) -> tuple[torch.Tensor, dict]:
    """(n_sequences, seq_len) LongTensor of windows at seeded random offsets, and what was used."""
    if tokenizer is None:
        raise UnsupportedQuantError("calibration needs a tokenizer (QuantContext.tokenizer is None)")
    if n_sequences < 1 or seq_len < 2:
        raise UnsupportedQuantError(
            f"calibration needs n_sequences >= 1 and seq_len >= 2 (got {n_sequences}, {seq_len})"
        )
    path = _source_path(source)
    ids, digest = _tokens(str(path), vocab_digest(tokenizer), tokenizer)
    if ids.numel() <= seq_len:
        raise UnsupportedQuantError(
            f"calibration source {source!r} has {ids.numel()} tokens, fewer than seq_len {seq_len}"
        )
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len, (n_sequences,), generator=gen)
    windows = torch.stack([ids[s : s + seq_len] for s in starts.tolist()])
    info = {
        "source": source,
        "sha256": digest,
        "source_tokens": int(ids.numel()),
        "n_sequences": n_sequences,
        "seq_len": seq_len,
        "seed": seed,
    }
    return windows, info


def load_calibration(
    ctx, purpose: str, n_sequences: int, seq_len: int, source: str = DEFAULT_SOURCE
) -> tuple[torch.Tensor, dict]:
    """The calibration batch for a QuantContext: ctx.calibration if the caller set one, else seeded windows.

    Either way ctx.info["calibration"][purpose] records what was used, and it is returned too.
    """
    if ctx.calibration is not None:
        batch = ctx.calibration()
        info = {
            "source": "caller",
            "n_sequences": int(batch.shape[0]),
            "seq_len": int(batch.shape[1]),
            "seed": ctx.seed,
        }
    else:
        batch, info = calibration_windows(ctx.tokenizer, n_sequences, seq_len, ctx.seed, source)
    ctx.info.setdefault("calibration", {})[purpose] = info
    return batch, info
