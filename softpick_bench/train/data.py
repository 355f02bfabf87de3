"""Token shards for training and packed batches with document boundaries.

A shard folder holds `train.bin` and `val.bin` (flat little-endian uint16 token ids) and
`meta.json` (counts, sources, the tokenizer's hash). Built by scripts/prepare_corpus.py;
never committed (tens of MB).

Packing (as the paper's training pipeline, flame, does with the Llama tokenizer): every
document is written as `bos doc eos`, documents are concatenated, and a training row is
`seq_len + 1` consecutive tokens from a random offset of that stream. A row therefore
starts anywhere (usually mid-document) and usually spans several documents; bos/eos mark
the boundaries. Attention DOES cross document boundaries inside a row (plain causal
attention, as in GPT-2/Llama-style packed pre-training): it keeps softmax on torch SDPA and
softpick on the kernel's plain causal path, and the bos/eos tokens tell the model where a
document begins.

Two row layouts (the recipe's `rows`):
- `stream`: the row is the window itself, so its first token is usually a mid-document token.
- `bos_first`: bos, then the window (seq_len tokens of the stream). Every row then starts with
  the same token, as every sample of the sink metric does. Gu et al. (ICLR 2025) found that a
  token fixed at one position during pre-training always takes the sink, while a first token
  that varies needs billions of training tokens before a sink appears (none below ~100M).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DOC_SEPARATOR = "\n\f\n"  # the shared corpus's document separator (a form-feed line)
TOKEN_DTYPE = np.uint16  # vocab 8192 fits; halves the shards against int32


def read_documents(path: Path) -> list[str]:
    """Documents of one text file (.txt, .txt.gz or .txt.xz), split on form-feed lines."""
    opener = {".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)
    with opener(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    return [d for d in text.rstrip("\n").split(DOC_SEPARATOR) if d.strip()]


def tokenizer_hash(tokenizer_json: Path) -> str:
    return hashlib.sha256(tokenizer_json.read_bytes()).hexdigest()[:16]


def encode_documents(
    tokenizer, docs: list[str], eos_id: int, max_tokens: int | None = None, bos_id: int | None = None
) -> np.ndarray:
    """Token ids of `docs`, each as [bos] doc eos, concatenated and cut at `max_tokens`."""
    out: list[np.ndarray] = []
    total = 0
    for start in range(0, len(docs), 64):
        for enc in tokenizer.encode_batch(docs[start : start + 64], add_special_tokens=False):
            ids = np.asarray(([] if bos_id is None else [bos_id]) + enc.ids + [eos_id], dtype=np.int64)
            if ids.max(initial=0) >= np.iinfo(TOKEN_DTYPE).max:
                raise ValueError("token id does not fit uint16; vocab too large for this shard format")
            out.append(ids.astype(TOKEN_DTYPE))
            total += ids.size
            if max_tokens is not None and total >= max_tokens:
                return np.concatenate(out)[:max_tokens]
    return np.concatenate(out) if out else np.zeros(0, dtype=TOKEN_DTYPE)


def write_shards(folder: Path, train: np.ndarray, val: np.ndarray, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    train.astype(TOKEN_DTYPE).tofile(folder / "train.bin")
    val.astype(TOKEN_DTYPE).tofile(folder / "val.bin")
    meta = dict(meta, train_tokens=int(train.size), val_tokens=int(val.size), dtype="uint16")
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


@dataclass
class TokenShards:
    train: np.ndarray
    val: np.ndarray
    meta: dict

    @classmethod
    def open(cls, folder: Path) -> TokenShards:
        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{folder}: no meta.json; build the shards with scripts/prepare_corpus.py")
        meta = json.loads(meta_path.read_text())
        train = np.memmap(folder / "train.bin", dtype=TOKEN_DTYPE, mode="r")
        val = np.memmap(folder / "val.bin", dtype=TOKEN_DTYPE, mode="r")
        return cls(train=train, val=val, meta=meta)


def _rows(tokens: np.ndarray, starts: np.ndarray, seq_len: int, first: int | None) -> torch.Tensor:
    """(B, seq_len + 1) rows: inputs are row[:-1], targets row[1:].

    Without `first` a row is seq_len + 1 consecutive tokens; with it, `first` followed by
    seq_len consecutive tokens (the same text, one token of context fewer at the end)."""
    n = seq_len + (1 if first is None else 0)
    rows = np.stack([np.asarray(tokens[s : s + n], dtype=np.int64) for s in starts])
    if first is not None:
        rows = np.concatenate([np.full((rows.shape[0], 1), first, dtype=np.int64), rows], axis=1)
    return torch.from_numpy(rows)


def train_batch(
    tokens: np.ndarray, step: int, batch_size: int, seq_len: int, seed: int, first: int | None = None
) -> torch.Tensor:
    """The batch of `step`: a pure function of (seed, step), so both sides of a pair see it."""
    if tokens.size <= seq_len + 1:
        raise ValueError(f"{tokens.size} training tokens is not more than one row of {seq_len + 1}")
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, tokens.size - seq_len, size=batch_size)
    return _rows(tokens, starts, seq_len, first)


def val_batches(
    tokens: np.ndarray, seq_len: int, batch_size: int, max_rows: int, first: int | None = None
) -> Iterator[torch.Tensor]:
    """Fixed validation rows from the start of the held-out stream (each predicts seq_len tokens)."""
    n_rows = min(max_rows, (tokens.size - 1) // seq_len)
    if n_rows == 0:
        raise ValueError(f"{tokens.size} validation tokens is less than one row of {seq_len + 1}")
    starts = np.arange(n_rows) * seq_len
    for i in range(0, n_rows, batch_size):
        yield _rows(tokens, starts[i : i + batch_size], seq_len, first)
