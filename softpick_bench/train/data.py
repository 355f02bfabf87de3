"""Token shards for training and packed batches with document boundaries.

A shard folder holds `train.bin` and `val.bin` (flat little-endian uint16 token ids,
documents joined with the tokenizer's eos id) and `meta.json` (counts, sources, the
tokenizer's hash). Built by scripts/prepare_corpus.py; never committed (tens of MB).

Packing: a training row is `bos` followed by `seq_len` tokens cut from a random offset
of the packed stream, so one row usually spans several documents separated by eos.
Attention DOES cross document boundaries inside a row (plain causal attention, as in
GPT-2/Llama-style packed pre-training): it keeps softmax on torch SDPA and softpick on
the kernel's plain causal path, and the eos token tells the model a new document began.
Every row starts with bos, so "the first token" (the one attention sinks form on) is the
same token in training, validation and the analysis samples.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

DOC_SEPARATOR = "\n\f\n"  # the shared corpus's document separator (a form-feed line)
TOKEN_DTYPE = np.uint16  # vocab 8192 fits; halves the shards against int32


def read_documents(path: Path) -> list[str]:
    """Documents of one text file (.txt or .txt.gz), split on form-feed lines."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        text = fh.read()
    return [d for d in text.rstrip("\n").split(DOC_SEPARATOR) if d.strip()]


def tokenizer_hash(tokenizer_json: Path) -> str:
    return hashlib.sha256(tokenizer_json.read_bytes()).hexdigest()[:16]


def encode_documents(tokenizer, docs: list[str], eos_id: int, max_tokens: int | None = None) -> np.ndarray:
    """Token ids of `docs`, each followed by eos, cut at `max_tokens` (whole documents first)."""
    out: list[np.ndarray] = []
    total = 0
    for start in range(0, len(docs), 64):
        for enc in tokenizer.encode_batch(docs[start : start + 64], add_special_tokens=False):
            ids = np.asarray(enc.ids + [eos_id], dtype=np.int64)
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


def _rows(tokens: np.ndarray, starts: np.ndarray, seq_len: int, bos_id: int) -> torch.Tensor:
    """(B, seq_len + 1) rows: bos then seq_len tokens from each start."""
    body = np.stack([np.asarray(tokens[s : s + seq_len], dtype=np.int64) for s in starts])
    bos = np.full((len(starts), 1), bos_id, dtype=np.int64)
    return torch.from_numpy(np.concatenate([bos, body], axis=1))


def train_batch(tokens: np.ndarray, step: int, batch_size: int, seq_len: int, seed: int, bos_id: int) -> torch.Tensor:
    """The batch of `step`: a pure function of (seed, step), so both sides of a pair see it."""
    if tokens.size <= seq_len:
        raise ValueError(f"{tokens.size} training tokens is not more than one row of {seq_len}")
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, tokens.size - seq_len, size=batch_size)
    return _rows(tokens, starts, seq_len, bos_id)


def val_batches(
    tokens: np.ndarray, seq_len: int, batch_size: int, max_rows: int, bos_id: int
) -> Iterator[torch.Tensor]:
    """Fixed, non-overlapping validation rows from the start of the held-out stream."""
    n_rows = min(max_rows, tokens.size // seq_len)
    if n_rows == 0:
        raise ValueError(f"{tokens.size} validation tokens is less than one row of {seq_len}")
    starts = np.arange(n_rows) * seq_len
    for i in range(0, n_rows, batch_size):
        yield _rows(tokens, starts[i : i + batch_size], seq_len, bos_id)
