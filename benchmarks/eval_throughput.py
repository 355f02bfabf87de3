"""Evaluation throughput of the lm-eval bridge on the paper's 340M architecture (random weights).

    python benchmarks/eval_throughput.py --tokenizer DIR --out results/bench/eval-h100.md

For each attention kind and each of the paper's five tasks (full test sets, zero-shot) it
runs the registered evaluator end to end (lm-eval task loading, requests, metrics) and
reports tokens per second and achieved TFLOP/s against a measured bf16 matmul peak.

FLOPs counted (forward only, the work a dense implementation must do):
  2 * (non-embedding transformer parameters) per real (unpadded) input token,
  2 * hidden * vocab per scored continuation token (the vocabulary projection),
  4 * head_dim * heads per causal (query, key) pair per layer (QK^T and PV).
Padding is not counted. "model" rates use the time inside the scoring loop; "end to end"
rates include lm-eval's own work (documents, tokenization, metrics, bootstrap).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from softpick_bench.eval.tasks import EvalTarget, make_spec, run_task
from softpick_bench.models.tiny import build_model, tiny_llama_config

PAPER_TASKS = ("arc_easy", "lambada_openai", "piqa", "sciq", "wikitext_word")


def paper_340m_config(vocab_size: int):
    """PAPER.md section 2: hidden 1024, 24 layers, 16 heads of 64, SwiGLU 2816, context 4096, MHA."""
    return tiny_llama_config(
        vocab_size=vocab_size,
        hidden=1024,
        layers=24,
        heads=16,
        kv_heads=16,
        intermediate=2816,
        max_positions=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def matmul_peak_tflops(n: int = 8192, reps: int = 20) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def task_flops(model, tokens: dict) -> float:
    cfg = model.config
    body = sum(p.numel() for p in model.model.layers.parameters()) + model.model.norm.weight.numel()
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    return (
        2 * body * tokens["real"]
        + 2 * cfg.hidden_size * cfg.vocab_size * tokens["scored"]
        + 4 * head_dim * cfg.num_attention_heads * cfg.num_hidden_layers * tokens["causal_pairs"]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="folder of a transformers tokenizer (Llama-2)")
    ap.add_argument("--out", type=Path, default=Path("results/bench/eval-h100.md"))
    ap.add_argument("--kinds", default="softmax,softpick")
    ap.add_argument("--tasks", default=",".join(PAPER_TASKS))
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--batch-tokens", type=int, default=65536)
    ap.add_argument("--bootstrap-iters", type=int, default=1000)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    peak = matmul_peak_tflops()
    print(f"bf16 matmul peak {peak:.0f} TFLOP/s", flush=True)
    rows = []
    for kind in args.kinds.split(","):
        model = build_model(paper_340m_config(len(tok)), kind, seed=0).to("cuda", torch.bfloat16)
        target = EvalTarget(model, tok, kind, "cuda", seed=0)
        opts = {"batch_size": args.batch_size, "batch_tokens": args.batch_tokens}
        run_task(target, make_spec("arc_easy", dict(opts, limit=64)))  # warm-up: kernel compilation, autotuning
        for task in args.tasks.split(","):
            extra = {"bootstrap_iters": args.bootstrap_iters}
            metrics = run_task(target, make_spec(task, dict(opts, **extra)))
            d = metrics[0].details
            flops = task_flops(model, d["tokens"])
            row = {
                "kind": kind,
                "task": task,
                "documents": d["documents"],
                "real_tokens": d["tokens"]["real"],
                "padded_tokens": d["tokens"]["forward"],
                "model_s": d["model_seconds"],
                "end_to_end_s": d["seconds"],
                "model_tok_s": d["tokens"]["real"] / d["model_seconds"],
                "e2e_tok_s": d["tokens"]["real"] / d["seconds"],
                "model_tflops": flops / d["model_seconds"] / 1e12,
                "e2e_tflops": flops / d["seconds"] / 1e12,
                "metrics": {m.metric: round(m.value, 4) for m in metrics},
            }
            row["model_pct_peak"] = 100 * row["model_tflops"] / peak
            rows.append(row)
            print(json.dumps(row), flush=True)
            write_table(args.out, rows, peak, args, echo=False)  # partial results survive a time limit
        del model
        torch.cuda.empty_cache()
    write_table(args.out, rows, peak, args)


def write_table(out: Path, rows: list[dict], peak: float, args, echo: bool = True) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# lm-eval bridge throughput, paper 340M architecture (random weights, bf16)",
        "",
        f"Machine: {torch.cuda.get_device_name()}, torch {torch.__version__}, python {platform.python_version()}.",
        (
            f"Measured bf16 matmul peak (8192^3): **{peak:.0f} TFLOP/s**. Batches: at most {args.batch_size} requests"
            f" and {args.batch_tokens} padded tokens, longest first. Full task data, zero-shot, max_length 4096."
        ),
        "Produced by `benchmarks/eval_throughput.py` (FLOP accounting in its docstring).",
        "",
        (
            "| kind | task | docs | real tokens | padded | model s | e2e s | model tok/s | e2e tok/s"
            " | model TFLOP/s | % peak | e2e TFLOP/s |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['task']} | {r['documents']} | {r['real_tokens']:,} | {r['padded_tokens']:,}"
            f" | {r['model_s']:.2f} | {r['end_to_end_s']:.2f} | {r['model_tok_s']:,.0f} | {r['e2e_tok_s']:,.0f}"
            f" | {r['model_tflops']:.0f} | {r['model_pct_peak']:.0f}% | {r['e2e_tflops']:.0f} |"
        )
    out.write_text("\n".join(lines) + "\n")
    (out.with_suffix(".json")).write_text(json.dumps({"peak_tflops": peak, "rows": rows}, indent=2) + "\n")
    if echo:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
