#!/usr/bin/env python
"""Build the token shards the trainer reads from folders of text files.

    # micro pair (18M training tokens)
    python scripts/prepare_corpus.py --src ../shared/data/corpus --out .carry/corpus \
        --val-file part-003.txt.gz --max-train-tokens 18000000 --max-val-tokens 500000
    # demo pair (all 36.8M tokens of corpus parts 000-002 and the Gutenberg classics)
    python scripts/prepare_corpus.py --src ../shared/data/corpus --src ../shared/data/gutenberg_classics \
        --out .carry/corpus-full --val-file part-003.txt.gz --max-val-tokens 500000

Every *.txt / *.txt.gz / *.txt.xz file in the --src folders is read (documents separated by form-feed lines, the
shared corpus's format; a file without separators is one document) and tokenized with the
project's BPE (softpick_bench/assets/tokenizer), each document written as `bos doc eos`. The file
named by --val-file is held out whole: validation loss and the committed analysis text
come only from it, training never sees it. Training documents are taken file by file in
name order until --max-train-tokens (the corpus files are already shuffled documents).
Writes train.bin, val.bin (uint16) and meta.json; keep the folder git-ignored (.carry/).
With --heldout-text PATH it also writes a gzip sample (--heldout-bytes of raw text) of the
validation documents, which the analysis task uses as its default sample text.
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from softpick_bench.train.data import DOC_SEPARATOR, encode_documents, read_documents, tokenizer_hash, write_shards

TOKENIZER = Path(__file__).resolve().parents[1] / "softpick_bench" / "assets" / "tokenizer" / "tokenizer.json"


def _encode_file(path: Path, eos: int, bos: int) -> np.ndarray:
    """All documents of one file as `bos doc eos` token ids (run in a worker process)."""
    return encode_documents(Tokenizer.from_file(str(TOKENIZER)), read_documents(path), eos, bos_id=bos)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, action="append", required=True,
                    help="folder of text files (repeatable: files of all folders, in name order)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--val-file", required=True, help="file name in --src held out for validation")
    ap.add_argument("--max-train-tokens", type=int, default=None)
    ap.add_argument("--max-val-tokens", type=int, default=500_000)
    ap.add_argument("--heldout-text", type=Path, default=None)
    ap.add_argument("--heldout-bytes", type=int, default=600_000)
    args = ap.parse_args(argv)

    tok = Tokenizer.from_file(str(TOKENIZER))
    eos, bos = tok.token_to_id("</s>"), tok.token_to_id("<s>")
    files = sorted((p for src in args.src for p in src.iterdir() if p.name.endswith((".txt", ".txt.gz", ".txt.xz"))),
                   key=lambda p: p.name)
    val_path = next((p for p in files if p.name == args.val_file), None)
    if val_path is None:
        raise SystemExit(f"--val-file {args.val_file!r} is not a text file in {', '.join(map(str, args.src))}")
    t0 = time.time()
    val_docs = read_documents(val_path)
    val = encode_documents(tok, val_docs, eos, args.max_val_tokens, bos_id=bos)
    train_files = [p for p in files if p != val_path]
    # every file whole, one process per file (the order is kept), then the cap: the same tokens
    # as encoding file by file up to --max-train-tokens
    with ProcessPoolExecutor(max_workers=min(len(train_files), os.cpu_count() or 1)) as pool:
        parts = list(pool.map(_encode_file, train_files, [eos] * len(train_files), [bos] * len(train_files)))
    used, total = [], 0
    for path, ids in zip(train_files, parts):
        if args.max_train_tokens is not None and total >= args.max_train_tokens:
            break
        used.append(path.name)
        total += ids.size
        print(f"{path.name}: {ids.size} tokens ({time.time() - t0:.0f} s)", flush=True)
    train = np.concatenate(parts[: len(used)])[: args.max_train_tokens]

    meta = {
        "source": [str(src) for src in args.src],
        "train_files": used,
        "val_file": args.val_file,
        "tokenizer_sha256_16": tokenizer_hash(TOKENIZER),
        "eos_id": eos,
        "bos_id": bos,
        "vocab_size": tok.get_vocab_size(),
        "documents_joined_with": "bos doc eos",
    }
    write_shards(args.out, train, val, meta)
    print(f"wrote {args.out}: train {train.size} tokens, val {val.size} tokens ({time.time() - t0:.0f} s)")
    if args.heldout_text is not None:
        sample, size = [], 0
        for doc in val_docs:  # whole documents from the held-out file, in order
            sample.append(doc)
            size += len(doc.encode())
            if size >= args.heldout_bytes:
                break
        args.heldout_text.parent.mkdir(parents=True, exist_ok=True)
        text = DOC_SEPARATOR.join(sample)
        if len(text.encode()) > args.heldout_bytes:  # the last document is cut at a line end
            text = text.encode()[: args.heldout_bytes].decode("utf-8", errors="ignore").rsplit("\n", 1)[0]
        with open(args.heldout_text, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as fh:
            fh.write((text + "\n").encode("utf-8"))  # mtime 0: the same text gives the same bytes
        print(f"wrote {args.heldout_text}: {len(sample)} documents, {len(text.encode())} bytes raw")


if __name__ == "__main__":
    main()
