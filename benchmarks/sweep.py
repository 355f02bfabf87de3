"""The paper's 340M matrix through the sweep command, with wall time per stage.

    python benchmarks/sweep.py --tokenizer ../shared/data/tokenizers/llama2 --out results/bench/sweep-h200.md
    python benchmarks/sweep.py --tokenizer DIR --device cpu --tiny --out /tmp/sweep-cpu.md   # a CPU smoke run

Two random-weight checkpoints of the paper's 340M architecture (softmax and softpick, bf16, the
Llama-2 tokenizer) are written to --work, then `softpick-bench sweep` runs the matrix
2 kinds x ({RTN, GPTQ, HQQ} x {2, 3, 4, 8} g128 + bnb nf4 + bnb int8 + baseline) x (the paper's
five lm-eval tasks + wikitext2), full task data. The table is built from the cell records:
- load: checkpoint loads (once per kind); quantize: per method, summed over its specs;
- request building: lm-eval's request construction and tokenization (the request cache's
  prepare time: once per task and tokenizer, not per cell);
- scoring: time inside the scoring loop (harness tasks) and the whole wikitext2 evaluation;
- metrics: the rest of each harness evaluation (filters, process_results, aggregation, stderr);
- sweep startup and plan, report: the sweep command's own phases (its sweep-phases.json);
- bookkeeping: the matrix's wall time minus all of the above (between and around cells: records,
  per-item files, freeing each quantized copy).
The scoring part's TFLOP/s (forward FLOPs as in eval_throughput.py) is put against the bf16
matmul peak measured in the same run. The last line is `matrix wall-clock: <s> s (<n> cells)`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_throughput import machine, matmul_peak_tflops, paper_340m_config, task_flops  # noqa: E402

from softpick_bench.cli import main as cli_main  # noqa: E402
from softpick_bench.models.tiny import build_model, tiny_llama_config  # noqa: E402

TASKS = ("arc_easy", "lambada_openai", "piqa", "sciq", "wikitext_word")


def matrix(group: int, device: str) -> list[dict]:
    quant = [{"method": m, "bits": [2, 3, 4, 8], "group_size": group} for m in ("rtn", "gptq")]
    quant.append({"method": "hqq", "bits": [2, 3, 4, 8], "group_size": group, "symmetric": False})
    quant += [{"method": "bnb", "bits": 4, "options": {"quant_type": "nf4"}}, {"method": "bnb", "bits": 8}]
    if device == "cpu":  # the CPU smoke run: fewer, cheaper cells
        quant = [{"method": "rtn", "bits": [2, 4], "group_size": group}, {"method": "gptq", "bits": 4, "group_size": group,
                 "options": {"nsamples": 4, "seq_len": 64}}]  # fmt: skip
    return quant


def write_checkpoints(work: Path, tokenizer_dir: str, tiny: bool) -> tuple[dict[str, str], object]:
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if tiny:
        config = tiny_llama_config(vocab_size=len(tok), layers=2, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    else:
        config = paper_340m_config(len(tok))
    paths = {}
    for kind in ("softmax", "softpick"):
        path = work / "checkpoints" / kind
        if not (path / "config.json").is_file():
            model = build_model(config, kind, seed=0).to(torch.bfloat16)
            model.save_pretrained(path)
            tok.save_pretrained(path)
        paths[kind] = str(path)
    return paths, config


def evaluation_stages(record: dict) -> dict[str, float]:
    """One cell's evaluation seconds by stage: for an lm-eval task, request building (the request
    cache's prepare), scoring (the forward loop) and metrics (the rest); otherwise the whole
    evaluation, as "scoring <task>"."""
    details, evaluate = record["metrics"][0]["details"], record["timing"]["evaluate_s"]
    if "request_cache" not in details:
        return {f"scoring {record['task']['name']}": evaluate}
    prepare, model_s = details["request_cache"]["prepare_s"], details["model_seconds"]
    return {"request building": prepare, "scoring": model_s, "metrics": evaluate - prepare - model_s}


def stage_table(records: list[dict], wall: float, peak: float | None, params_model,
                phases: dict | None = None) -> tuple[list[str], dict]:
    """phases: the sweep command's sweep-phases.json; its startup and report are then stages of their
    own, and "bookkeeping" is what is left (between and around cells)."""
    stages: dict[str, float] = defaultdict(float)
    flops, scoring = 0.0, 0.0
    loads = {}
    units = set()
    for r in records:
        t = r["timing"]
        loads[r["checkpoint"]] = t["load_s"]
        unit = (r["checkpoint"], r["quant_label"])
        if unit not in units:
            units.add(unit)
            if r["quant"]["method"] != "none" or t["quantize_s"]:
                stages[f"quantize {r['quant']['method']}"] += t["quantize_s"]
            stages["copy"] += t["copy_s"]
        cell = evaluation_stages(r)
        for name, sec in cell.items():
            stages[name] += sec
        if "scoring" in cell:
            scoring += cell["scoring"]
            flops += task_flops(params_model, r["metrics"][0]["details"]["tokens"])
    stages["load"] = sum(loads.values())
    if phases:
        stages["sweep startup and plan"] = phases["startup_and_plan_s"]
        stages["report"] = phases["report_s"]
    stages["bookkeeping"] = wall - sum(stages.values())
    lines = ["| stage | seconds | % of wall |", "|---|---:|---:|"]
    for name, sec in sorted(stages.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {sec:.1f} | {100 * sec / wall:.1f}% |")
    rate = flops / scoring / 1e12 if scoring else 0.0
    summary = {"scoring_tflops": rate, "peak_tflops": peak, "stages": dict(stages)}
    return lines, summary


def method_table(records: list[dict]) -> list[str]:
    """Seconds per quantized model, by method: scoring (the forward) and metrics (lm-eval's work after
    it) summed over the harness tasks, and wikitext2's whole evaluation. Where the evaluation time goes."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    models: dict[str, set] = defaultdict(set)
    for r in records:
        q = r["quant"]
        method = q["method"] if q["method"] != "none" else ("kv" if q.get("kv_bits") else "none (bf16)")
        models[method].add((r["checkpoint"], r["quant_label"]))
        for name, sec in evaluation_stages(r).items():
            sums[method][name] += sec
    lines = ["| method | models | scoring s / model | metrics s / model | wikitext2 s / model |", "|---|---:|---:|---:|---:|"]
    for method, s in sorted(sums.items()):
        n = len(models[method])
        lines.append(f"| {method} | {n} | {s['scoring'] / n:.1f} | {s['metrics'] / n:.1f} | {s['scoring wikitext2'] / n:.1f} |")
    return lines


def read_records(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run / "cells").glob("[!.]*.json"))
            if not p.name.endswith(".error.json")]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", help="tokenizer folder (the Llama-2 tokenizer for the paper)")
    ap.add_argument("--out", type=Path, help="Markdown table to write")
    ap.add_argument("--work", type=Path, default=Path("runs/bench-sweep"), help="checkpoints, config, results")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model instead of 340M (smoke runs)")
    ap.add_argument("--limit", type=int, default=None, help="documents per lm-eval task (default: all)")
    ap.add_argument("--batch-size", type=int, default=64, help="lm-eval tasks: most requests per forward")
    ap.add_argument("--batch-tokens", type=int, default=None, help="lm-eval tasks: most tokens per forward")
    ap.add_argument("--forward", choices=("eager", "fused"), default="eager",
                    help="every task's forward option (fused: models/fused.py)")
    ap.add_argument("--breakdown", type=Path, metavar="RUN", help="only print the per-method table of RUN's records")
    args = ap.parse_args()
    if args.breakdown:
        print("\n".join(method_table(read_records(args.breakdown))))
        return
    if not (args.tokenizer and args.out):
        ap.error("--tokenizer and --out are required (unless --breakdown)")

    args.work.mkdir(parents=True, exist_ok=True)
    paths, model_config = write_checkpoints(args.work, args.tokenizer, args.tiny)
    cuda = args.device.startswith("cuda")
    peak = matmul_peak_tflops() if cuda else None
    if peak:  # printed now too: a run stopped before its table keeps it in the log
        print(f"bf16 matmul peak measured in this run: {peak:.0f} TFLOP/s", flush=True)
    seq = 2048 if not args.tiny else 256
    extra = {} if args.limit is None else {"limit": args.limit}
    batching = {} if args.batch_tokens is None else {"batch_tokens": args.batch_tokens}
    forward = {} if args.forward == "eager" else {"forward": args.forward}
    config = {
        "name": "sweep-bench",
        "seed": 0,
        "dtype": "bfloat16" if cuda else "float32",
        "device": args.device,
        "pairs": [{"name": "paper340m", **paths}],
        "quant": matrix(128 if not args.tiny else 32, args.device),
        "tasks": [{"name": "wikitext2", "seq_len": seq, "batch_size": 8, **forward,
                   **({"max_windows": 4} if args.limit else {})}]
        + [{"name": t, "batch_size": args.batch_size, **batching, **forward, **extra} for t in TASKS],
    }
    cfg_path = args.work / "sweep-bench.yaml"
    cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
    run = args.work / "run"
    if run.exists():  # the stage table puts the records' times against this run's wall time: start empty
        shutil.rmtree(run)
    start = time.perf_counter()
    code = cli_main(["sweep", str(cfg_path), "--out", str(run)])
    wall = time.perf_counter() - start
    records = read_records(run)
    errors = len(list((run / "cells").glob("*.error.json")))
    with torch.device("meta"):  # only the shapes are needed, for the FLOP count
        model = build_model(model_config, "softmax")
    phases_file = run / "sweep-phases.json"
    phases = json.loads(phases_file.read_text()) if phases_file.is_file() else None
    lines, summary = stage_table(records, wall, peak, model, phases)
    head = [
        f"# The paper's 340M matrix through `softpick-bench sweep` ({machine()})",
        "",
        f"`python benchmarks/sweep.py --tokenizer {args.tokenizer} --out {args.out}"
        + (" --tiny" if args.tiny else "") + (f" --limit {args.limit}" if args.limit else "")
        + (f" --batch-size {args.batch_size}" if args.batch_size != 64 else "")
        + (f" --batch-tokens {args.batch_tokens}" if args.batch_tokens else "")
        + (f" --forward {args.forward}" if args.forward != "eager" else "") + "`",
        "",
        f"{len(records)} cells ok, {errors} failed (sweep exit code {code}); random weights, "
        f"{config['dtype']}, " + ("full task data." if args.limit is None else f"{args.limit} documents per lm-eval task."),
        "",
    ]
    tail = [
        "",
        "Per quantized model, by method (all six tasks; the first baseline model also pays kernel compilation):",
        "",
        *method_table(records),
        "",
        f"scoring: {summary['scoring_tflops']:.1f} TFLOP/s"
        + (f" = {100 * summary['scoring_tflops'] / peak:.1f}% of the bf16 matmul peak ({peak:.0f} TFLOP/s, "
           "measured in this run)" if peak else ""),
        "",
        f"matrix wall-clock: {wall:.1f} s ({len(records)} cells)",
    ]  # fmt: skip
    text = "\n".join(head + lines + tail) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    (args.out.with_suffix(".json")).write_text(json.dumps(summary, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
