"""wikitext2 (the GPTQ-convention perplexity) on the paper's 340M architecture, by batching and forward.

    python benchmarks/perplexity_paths.py --tokenizer DIR --out results/bench/perplexity-paths-h200.md

Random weights, bf16, the full WikiText-2 test split in windows of 2048, 8 windows per forward,
through the registered task. Each combination of batching (padded: a (B, T) batch and our kinds'
boolean causal mask, analysed in every layer; packed: one row with cu_seq_lens,
eval/perplexity.py) and forward (eager, fused: models/fused.py) runs once untimed (compilation),
then --reps timed runs; the median is reported, with the perplexity and its relative difference
from padded eager's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_throughput import machine, paper_340m_config  # noqa: E402

from softpick_bench.eval import perplexity  # noqa: E402
from softpick_bench.eval.tasks import EvalTarget, make_spec, run_task  # noqa: E402
from softpick_bench.models.tiny import build_model  # noqa: E402

COMBINATIONS = [("off", "eager"), ("auto", "eager"), ("off", "fused"), ("auto", "fused")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--max-windows", type=int, default=None, help="fewer windows (CPU smoke runs)")
    args = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    cuda = args.device.startswith("cuda")
    rows = []
    for kind in ("softmax", "softpick"):
        model = build_model(paper_340m_config(len(tok)), kind, seed=0)
        model = model.to(args.device, torch.bfloat16 if cuda else torch.float32)
        target = EvalTarget(model, tok, kind, args.device)
        base = None
        for packing, forward in COMBINATIONS:
            perplexity.PACKING = packing
            spec = make_spec("wikitext2", {"seq_len": 2048, "batch_size": 8, "forward": forward,
                                           "max_windows": args.max_windows})
            times, metric = [], None
            for rep in range(args.reps + 1):
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                metric = run_task(target, spec).metrics[0]
                if cuda:
                    torch.cuda.synchronize()
                if rep:
                    times.append(time.perf_counter() - start)
            base = base if base is not None else metric.value
            rows.append((kind, metric.details["attention_path"], forward, metric.details["windows"],
                         statistics.median(times), metric.value, metric.value / base - 1))
            print(rows[-1], flush=True)
        del model
        if cuda:
            torch.cuda.empty_cache()
    perplexity.PACKING = "auto"
    lines = [f"# wikitext2 by batching and forward, paper 340M architecture ({machine()})", "",
             f"`python benchmarks/perplexity_paths.py --tokenizer {args.tokenizer} --out {args.out}`", "",
             f"Random weights, {'bf16' if cuda else 'float32'}, windows of 2048, 8 per forward; 1 untimed run, "
             f"median of {args.reps}.", "",
             "| kind | batching | forward | windows | seconds | speed-up | ppl_gptq | vs padded eager |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for kind, path, forward, windows, seconds, value, rel in rows:
        first = next(r[4] for r in rows if r[0] == kind)
        lines.append(f"| {kind} | {path} | {forward} | {windows} | {seconds:.3f} | {first / seconds:.2f}x | "
                     f"{value:.6g} | {rel:+.2e} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
