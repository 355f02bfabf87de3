"""Time every quantization method on the paper's 340M architecture (random weights stand in).

    python benchmarks/quant.py --out results/bench/quant-h100.md          # the GPU table
    python benchmarks/quant.py --arch tiny --nsamples 4 --seq-len 128     # a CPU smoke run

Each cell quantizes a fresh copy of one random-initialised softpick model (bf16 on GPU) with
softpick_bench.quant.apply.quantize and records: wall seconds (synchronised), peak GPU memory
during quantization (reset per cell; it includes the model copy), the report's proof
(layers replaced, mean relative weight or measured activation-side error, effective bits)
and the relative change of the logits on one held batch. GPTQ calibrates on seeded windows
of the shipped Gutenberg slice through softpick attention.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from softpick_bench.errors import SoftpickBenchError
from softpick_bench.models.checkpoint import load_tokenizer
from softpick_bench.models.tiny import build_model, tiny_llama_config
from softpick_bench.quant.apply import quantize
from softpick_bench.quant.base import QuantContext
from softpick_bench.quant.spec import QuantSpec

ARCHS = {
    # PAPER.md section 2: hidden 1024, 24 layers, 16 heads of 64, MLP 2816; Llama-2 vocabulary size
    "340m": {
        "vocab_size": 32000,
        "hidden": 1024,
        "layers": 24,
        "heads": 16,
        "kv_heads": 16,
        "intermediate": 2816,
        "max_positions": 4096,
    },
    "tiny": {
        "vocab_size": 8192,
        "hidden": 128,
        "layers": 2,
        "heads": 4,
        "kv_heads": 2,
        "intermediate": 256,
        "max_positions": 1024,
    },
}


def cells(nsamples: int, seq_len: int, group: int) -> list[QuantSpec]:
    gptq = {"nsamples": nsamples, "seq_len": seq_len, "damp": 0.01}
    out = [QuantSpec("rtn", b, group) for b in (2, 3, 4, 8)]
    out += [QuantSpec("hqq", b, group, symmetric=False) for b in (2, 3, 4, 8)]
    out += [QuantSpec("bnb", 4, options={"quant_type": t}) for t in ("nf4", "fp4")]
    out += [QuantSpec("bnb", 4, options={"quant_type": "nf4", "double_quant": True})]
    out += [QuantSpec("bnb", 8, options={"threshold": t}) for t in (6.0, 0.0)]
    out += [
        QuantSpec("rtn", 8, act_bits=8, act_granularity="per_token"),
        QuantSpec("rtn", 4, group, act_bits=8, act_granularity="per_tensor"),
        QuantSpec(kv_bits=4, kv_granularity="per_token"),
        QuantSpec(probs_bits=8),
    ]
    out += [QuantSpec("gptq", b, group, options=gptq) for b in (2, 3, 4, 8)]
    out += [QuantSpec("gptq", 4, group, options={**gptq, "act_order": True})]
    return out


def proof(report) -> str:
    if report.mean_rel_weight_error is not None:
        return f"w {report.mean_rel_weight_error:.4f}"
    d = report.details
    if "activation" in d:
        return f"a {d['activation']['mean_rel_error']:.4f}"
    if "kv" in d:
        return f"k {d['kv']['rel_error_keys']:.4f} v {d['kv']['rel_error_values']:.4f}"
    return f"p {d['probs']['rel_error']:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="340m")
    ap.add_argument("--kind", default="softpick")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--only", default="", help="comma-separated methods to run (default all)")
    ap.add_argument("--budget-s", type=float, default=1e9, help="stop starting new cells after this many seconds")
    ap.add_argument("--out", type=Path, help="write the Markdown table here")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tok = load_tokenizer(ROOT / "softpick_bench" / "assets" / "tokenizer")
    base = build_model(tiny_llama_config(**ARCHS[args.arch]), args.kind, seed=0).to(device=device, dtype=dtype)
    probe = torch.randint(3, len(tok), (4, 512), generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        ref = base(probe).logits.float()  # also compiles the attention kernel before any timing
    n_params = sum(p.numel() for p in base.parameters())
    only = {m for m in args.only.split(",") if m}

    rows, started = [], time.perf_counter()
    for spec in cells(args.nsamples, args.seq_len, args.group_size):
        if only and spec.method not in only:
            continue
        if time.perf_counter() - started > args.budget_s:
            rows.append((spec.label(), "not run (time budget)", "", "", "", "", ""))
            continue
        model = copy.deepcopy(base)
        ctx = QuantContext(tokenizer=tok, device=device, seed=0)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            report = quantize(model, spec, ctx)
        except SoftpickBenchError as exc:
            rows.append((spec.label(), f"skipped: {exc}", "", "", "", "", ""))
            continue
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            out = model(probe).logits.float()
        change = float((out - ref).norm() / ref.norm())
        peak = f"{report.peak_memory_bytes / 2**30:.2f}" if device == "cuda" and report.peak_memory_bytes else "-"
        rows.append(
            (
                spec.label(),
                f"{seconds:.2f}",
                peak,
                f"{report.layers_quantized}/{report.layers_total}",
                proof(report),
                f"{report.effective_bits:.3f}" if report.effective_bits else "-",
                f"{change:.4f}",
            )
        )
        print(" | ".join(rows[-1]), flush=True)
        del model
        if device == "cuda":
            torch.cuda.empty_cache()

    name = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    lines = [
        f"# Quantization time per method, {args.arch} architecture (random weights), {args.kind} attention",
        "",
        (
            f"Machine: {name}; torch {torch.__version__}; {dtype}; {n_params / 1e6:.0f}M parameters. "
            f"GPTQ calibration: {args.nsamples} x {args.seq_len} tokens of the shipped Gutenberg slice, seed 0; "
            f"group size {args.group_size} where grouped. Written by `benchmarks/quant.py`."
        ),
        "",
        (
            "Columns: wall seconds of `quantize()` (synchronised; includes calibration and tokenisation), "
            "peak GPU memory during it (GiB, model copy included), layers replaced / total, proof "
            "(w = mean relative weight error, a/k/v/p = measured activation-side relative error), "
            "effective bits per quantized weight (scales and zero points included), relative change of "
            "the logits on a held 4 x 512 batch."
        ),
        "",
        "| cell | seconds | peak GiB | layers | proof | bits/param | logit change |",
        "|---|---|---|---|---|---|---|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
