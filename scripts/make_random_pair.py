"""Write a random-initialised pair (softmax, softpick) in the project's checkpoint format.

Both sides share every weight (same seed); only `attention_kind` differs. Its numbers
mean nothing: it exists so the pipeline can be exercised before a trained pair exists.

    python scripts/make_random_pair.py checkpoints/random
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import AutoTokenizer

from softpick_bench.models.checkpoint import save_checkpoint
from softpick_bench.models.tiny import build_model, tiny_llama_config

TOKENIZER = Path(__file__).resolve().parents[1] / "softpick_bench" / "assets" / "tokenizer"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    config = tiny_llama_config(vocab_size=len(tok))
    for kind in ("softmax", "softpick"):
        model = build_model(config, kind, seed=args.seed).to(torch.bfloat16)  # bf16 on disk: half the bytes
        save_checkpoint(model, tok, args.out / kind, kind, extra={"training": {"note": "random init, untrained"}})
        print(f"wrote {args.out / kind}")


if __name__ == "__main__":
    main()
