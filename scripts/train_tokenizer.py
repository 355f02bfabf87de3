"""Train the project's byte-level BPE tokenizer on the training corpus (never an evaluation set).

A small vocabulary keeps small models sensible: with 8192 entries the embedding and
output matrices of a micro model stay a few MB, where Llama-2's 32000 would dominate it.

    python scripts/train_tokenizer.py ../shared/data/corpus softpick_bench/assets/tokenizer
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIALS = ["<s>", "</s>", "<pad>"]


def corpus_documents(folder: Path, bytes_per_shard: int):
    """Yield documents from the start of every shard: a sample of the mix, read lazily."""
    for shard in sorted(folder.glob("part-*.txt.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as f:
            text = f.read(bytes_per_shard)
        yield from text.split("\n\f\n")[:-1]  # the last piece may be cut mid-document


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--bytes-per-shard", type=int, default=10_000_000)
    args = ap.parse_args()

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
    )
    tok.train_from_iterator(corpus_documents(args.corpus, args.bytes_per_shard), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.save_pretrained(args.out)
    print(f"vocabulary {tok.get_vocab_size()} written to {args.out}")


if __name__ == "__main__":
    main()
