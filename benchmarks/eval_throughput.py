"""Evaluation throughput of the lm-eval bridge on the paper's 340M architecture (random weights).

    python benchmarks/eval_throughput.py --tokenizer DIR --out results/bench/eval-loops-h100.md   # compare
    python benchmarks/eval_throughput.py --mode e2e --tokenizer DIR --out results/bench/eval-h100.md

--mode compare (default): the scoring loops side by side on the same requests. For each of
the paper's five tasks the registered evaluator runs once end to end (first kind, packed
loop, --limit documents, zero-shot), and the loglikelihood requests lm-eval hands the
bridge are recorded. Then, for each attention kind, BenchLM's `_loglikelihood_tokens`
replays those requests under each loop (--loops, default padded then packed): one untimed
warm-up (kernel compilation), then --reps timed runs; the median is reported. The last
loop's per-request log-likelihoods and greedy flags are compared with the first loop's
(bf16: small differences are expected, flipped greedy flags are counted). A loop is a packing
mode, optionally with the fused forward: `--loops on,on+fused` times eager against fused.
--mode e2e: the registered evaluator end to end for each kind and task (full data unless
--limit), with the loop given by --packing.

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
import statistics
import time
from pathlib import Path
from unittest import mock

import torch

from softpick_bench.eval.harness.bridge import PACKING_MODES, BenchLM
from softpick_bench.eval.tasks import EvalTarget, make_spec, run_task
from softpick_bench.models.fused import scoring_forward
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
    ap.add_argument("--mode", choices=("compare", "e2e"), default="compare")
    ap.add_argument("--tokenizer", required=True, help="folder of a transformers tokenizer (Llama-2)")
    ap.add_argument("--out", type=Path, default=None,
                    help="table (default results/bench/eval-loops-h100.md, e2e: results/bench/eval-h100.md)")
    ap.add_argument("--kinds", default="softmax,softpick")
    ap.add_argument("--tasks", default=",".join(PAPER_TASKS))
    ap.add_argument("--batch-size", type=int, default=4096, help="most requests per forward pass")
    ap.add_argument("--batch-tokens", type=int, default=131072, help="most (padded) tokens per forward pass")
    ap.add_argument("--bootstrap-iters", type=int, default=None, help="default 100 (compare), 1000 (e2e)")
    ap.add_argument("--limit", type=int, default=None, help="documents per task (default 1000 compare, all e2e)")
    ap.add_argument("--loops", default="off,on",
                    help="compare: packing modes to time, 'off' = padded, 'on' = packed; '+fused' after one: "
                         "the fused forward (e.g. on,on+fused)")
    ap.add_argument("--reps", type=int, default=3, help="compare: timed runs per loop after one warm-up")
    ap.add_argument("--device", default="cuda", help="compare: 'cpu' for a smoke run of the script (float32)")
    ap.add_argument("--packing", choices=PACKING_MODES, default="auto", help="e2e: the loop (BenchLM.default_packing)")
    args = ap.parse_args()
    if args.mode == "compare":
        compare(args)
        return
    args.out = args.out or Path("results/bench/eval-h100.md")
    args.bootstrap_iters = 1000 if args.bootstrap_iters is None else args.bootstrap_iters
    BenchLM.default_packing = args.packing

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
            extra = {"bootstrap_iters": args.bootstrap_iters, "limit": args.limit}
            metrics = run_task(target, make_spec(task, dict(opts, **extra))).metrics
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
            f" and {args.batch_tokens} padded tokens, longest first. Scoring loop: packing={args.packing}."
            f" {'Full task data' if args.limit is None else f'At most {args.limit} documents'}, zero-shot,"
            " max_length 4096."
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


def capture_requests(target: EvalTarget, task: str, opts: dict) -> tuple[list[list], list, float]:
    """Run the registered evaluator once; return the request lists it passed to the scoring loop."""
    calls: list[list] = []
    scoring_loop = BenchLM._loglikelihood_tokens

    def recorder(self, requests, disable_tqdm=False, override_bs=None):
        requests = list(requests)
        calls.append(requests)
        return scoring_loop(self, requests, disable_tqdm=disable_tqdm, override_bs=override_bs)

    with mock.patch.object(BenchLM, "_loglikelihood_tokens", recorder):
        metrics = run_task(target, make_spec(task, opts)).metrics
    return calls, metrics, metrics[0].details["seconds"]


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def replay(model, tok, calls: list[list], loop: str, opts: dict, reps: int) -> dict:
    """One warm-up and `reps` timed passes of the scoring loop over the recorded requests.

    loop: a packing mode, optionally with "+fused" (the fused forward, models/fused.py)."""
    packing, _, fused = loop.partition("+")
    times, answers, lm = [], None, None
    for rep in range(reps + 1):
        lm = BenchLM(model, tok, batch_size=opts["batch_size"], batch_tokens=opts["batch_tokens"], packing=packing)
        sync()
        start = time.perf_counter()
        with scoring_forward(model, "fused" if fused else "eager"):
            answers = [a for reqs in calls for a in lm._loglikelihood_tokens(reqs, disable_tqdm=True)]
        sync()
        if rep:
            times.append(time.perf_counter() - start)
    tokens = {"forward": lm.forward_tokens, "real": lm.real_tokens, "scored": lm.scored_tokens,
              "causal_pairs": lm.causal_pairs}
    return {"seconds": statistics.median(times), "times": times, "tokens": tokens, "answers": answers,
            "forward_calls": lm.forward_calls, "packed": lm.uses_packing()}


def agreement(got: list, want: list) -> dict:
    """The last loop against the first: largest |difference| of log-likelihoods (absolute, and over max(1, |ll|))."""
    diffs = [abs(g[0] - w[0]) for g, w in zip(got, want)]
    rel = [d / max(1.0, abs(w[0])) for d, w in zip(diffs, want)]
    flips = sum(g[1] != w[1] for g, w in zip(got, want))
    return {"max_abs": max(diffs, default=0.0), "max_rel": max(rel, default=0.0), "greedy_flips": flips}


def compare(args) -> None:
    from transformers import AutoTokenizer

    out = args.out or Path("results/bench/eval-loops-h100.md")
    limit = 1000 if args.limit is None else (args.limit or None)
    boot = 100 if args.bootstrap_iters is None else args.bootstrap_iters
    loops = args.loops.split(",")
    opts = {"batch_size": args.batch_size, "batch_tokens": args.batch_tokens}
    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    cuda = args.device == "cuda"
    peak = matmul_peak_tflops() if cuda else float("nan")
    print(f"bf16 matmul peak {peak:.0f} TFLOP/s", flush=True)
    kinds = args.kinds.split(",")
    setup = {"peak_tflops": peak, "limit": limit, "bootstrap_iters": boot, "loops": loops, "reps": args.reps, **opts}
    recorded: dict[str, tuple] = {}
    rows: list[dict] = []
    for k, kind in enumerate(kinds):
        t0 = time.perf_counter()
        model = build_model(paper_340m_config(len(tok)), kind, seed=0)
        model = model.to("cuda", torch.bfloat16) if cuda else model
        print(f"{kind}: model built in {time.perf_counter() - t0:.1f} s", flush=True)
        for task in args.tasks.split(","):
            if k == 0:  # record the requests once (end to end, packed loop), reuse them for every kind
                target = EvalTarget(model, tok, kind, args.device, seed=0)
                BenchLM.default_packing = "auto"
                calls, metrics, e2e = capture_requests(target, task, dict(opts, limit=limit, bootstrap_iters=boot))
                recorded[task] = (calls, metrics[0].details["documents"], e2e,
                                  {m.metric: round(m.value, 4) for m in metrics})
            calls, docs, e2e, metric_values = recorded[task]
            runs = {loop: replay(model, tok, calls, loop, opts, args.reps) for loop in loops}
            row = {"kind": kind, "task": task, "documents": docs, "requests": sum(len(c) for c in calls),
                   "capture_e2e_s": e2e, "capture_metrics": metric_values if k == 0 else None, "loops": {}}
            for loop, run in runs.items():
                flops = task_flops(model, run["tokens"])
                row["loops"][loop] = {
                    "packed": run["packed"], "seconds": run["seconds"], "times": run["times"],
                    "forward_calls": run["forward_calls"], "tokens": run["tokens"],
                    "tok_s": run["tokens"]["real"] / run["seconds"], "tflops": flops / run["seconds"] / 1e12,
                    "pct_peak": 100 * flops / run["seconds"] / 1e12 / peak,
                }
            if len(loops) > 1:
                row["agreement"] = agreement(runs[loops[-1]]["answers"], runs[loops[0]]["answers"])
            rows.append(row)
            print(json.dumps(row), flush=True)
            write_compare_table(out, rows, setup, echo=False)
        del model
        if cuda:
            torch.cuda.empty_cache()
    write_compare_table(out, rows, setup)


def machine() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or 'unknown'})"


def write_compare_table(out: Path, rows: list[dict], setup: dict, echo: bool = True) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    loops = setup["loops"]
    name = {"off": "padded", "on": "packed", "auto": "auto", "off+fused": "padded fused", "on+fused": "packed fused"}
    lines = [
        "# lm-eval scoring loops side by side, paper 340M architecture (random weights, bf16)",
        "",
        f"Machine: {machine()}, torch {torch.__version__}, python {platform.python_version()}.",
        (
            f"Measured bf16 matmul peak (8192^3): **{setup['peak_tflops']:.0f} TFLOP/s**. Requests recorded from one"
            f" end-to-end run per task ({setup['limit'] or 'all'} documents at most, zero-shot, max_length 4096),"
            f" replayed through BenchLM's scoring loop: 1 warm-up + {setup['reps']} timed runs, median."
            f" Batches: at most {setup['batch_size']} requests and {setup['batch_tokens']} tokens (padded, for the"
            " padded loop), longest first."
        ),
        "Produced by `benchmarks/eval_throughput.py` (FLOP accounting in its docstring).",
        "",
    ]
    head = "| kind | task | requests | real tokens |"
    rule = "|---|---|---:|---:|"
    for loop in loops:
        n = name.get(loop, loop)
        head += f" {n} tokens | {n} s | {n} TFLOP/s | {n} % peak |"
        rule += "---:|---:|---:|---:|"
    if len(loops) > 1:
        head += " speed-up | max abs dLL | max rel dLL | greedy flips |"
        rule += "---:|---:|---:|---:|"
    lines += [head, rule]
    for r in rows:
        first = r["loops"][loops[0]]
        line = f"| {r['kind']} | {r['task']} | {r['requests']:,} | {first['tokens']['real']:,} |"
        for loop in loops:
            x = r["loops"][loop]
            line += f" {x['tokens']['forward']:,} | {x['seconds']:.3f} | {x['tflops']:.0f} | {x['pct_peak']:.0f}% |"
        if len(loops) > 1:
            a = r["agreement"]
            speed = first["seconds"] / r["loops"][loops[-1]]["seconds"]
            line += f" {speed:.2f}x | {a['max_abs']:.3g} | {a['max_rel']:.3g} | {a['greedy_flips']} |"
        lines.append(line)
    lines += ["", "End-to-end capture runs (first kind, packed loop, lm-eval's own work included):", ""]
    lines += [f"- {r['task']}: {r['documents']} documents, {r['capture_e2e_s']:.1f} s, {r['capture_metrics']}"
              for r in rows if r["capture_metrics"] is not None]
    out.write_text("\n".join(lines) + "\n")
    (out.with_suffix(".json")).write_text(json.dumps({**setup, "rows": rows}, indent=2) + "\n")
    if echo:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
