"""`softpick-bench train`: train a softmax/softpick pair from a recipe in configs/train/.

    python -m softpick_bench.train.command --config configs/train/micro.yaml --out runs/micro
    softpick-bench train --config configs/train/demo.yaml --out runs/demo --analysis

Writes OUT/{softmax,softpick}/ (project checkpoint format, with tokenizer and
train_config.json), OUT/train_log.jsonl, OUT/summary.json, OUT/loss.png and, with
--analysis, OUT/analysis.json (the analysis task's metrics for each side).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    import torch  # here, not at the top: the CLI builds this parser for every command

    from softpick_bench.train.config import TrainConfig
    from softpick_bench.train.plot import plot_analysis, plot_losses
    from softpick_bench.train.trainer import train_pair

    overrides = {"steps": args.steps, "time_limit_s": args.time_limit, "attention_backend": args.attention_backend}
    if args.steps is not None and args.steps < 100:  # smoke runs: keep warm-up and evals inside the run
        overrides.update(warmup_steps=max(1, args.steps // 10), eval_every=0, log_every=1)
    cfg = TrainConfig.from_yaml(args.config, settings=args.set, **overrides)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    summary = train_pair(cfg, out, device=device, data_dir=args.data)
    plot_losses(out / "train_log.jsonl", out / "loss.png", title=f"{cfg.name}: {summary['steps_done']} steps")
    plot_analysis(out / "train_log.jsonl", out / "analysis_over_training.png", title=f"{cfg.name}: analysis during training")
    for kind, side in summary["sides"].items():
        print(f"{kind}: train {side['final_train_loss']:.4f} val {side['final_val_loss']:.4f} "
              f"({side['tok_per_s']:.0f} tok/s, {side['train_backend']})")
    if args.analysis:
        from softpick_bench.eval.analysis import analyse_checkpoint

        # the sink metric's convention (short samples, many of them, bos first), the same without
        # bos (a sink on whatever token comes first), then the full training context
        short = min(cfg.seq_len, args.analysis_seq_len)
        for name, n, t, bos in (("analysis.json", args.analysis_samples, short, True),
                                ("analysis_nobos.json", args.analysis_samples, short, False),
                                (f"analysis_T{cfg.seq_len}.json", 16, cfg.seq_len, True)):
            results = {kind: analyse_checkpoint(out / kind, device=device, n_samples=n, seq_len=t, prepend_bos=bos)
                       for kind in summary["sides"]}
            (out / name).write_text(json.dumps(results, indent=2) + "\n")
            for kind, metrics in results.items():
                print(f"{name} {kind}", " ".join(f"{k}={v:.4g}" for k, v in metrics["values"].items()), flush=True)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `train` on an argparse subparsers object (called by softpick_bench.cli)."""
    p = subparsers.add_parser("train", help="train a softmax/softpick checkpoint pair", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="recipe YAML (configs/train/*.yaml)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--data", type=Path, default=None, help="token shard folder (default: the recipe's `data`)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--steps", type=int, default=None, help="override the recipe's step count (smoke tests)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe option, e.g. --set weight_decay=0.5 --set model.layers=6 (repeatable)")
    p.add_argument("--time-limit", type=float, default=None, help="stop early after this many seconds")
    p.add_argument("--attention-backend", choices=("auto", "kernel", "reference", "sdpa"), default=None,
                   help="training attention, one path for both kinds (auto: the Triton kernel on CUDA once it "
                        "passes a self-check, the reference on CPU; sdpa: softmax-only recipes, not deterministic)")
    p.add_argument("--analysis", action="store_true", help="run the analysis metrics on both checkpoints")
    p.add_argument("--analysis-samples", type=int, default=100)
    p.add_argument("--analysis-seq-len", type=int, default=64, help="sample length (64: Gu et al.'s sink metric)")
    p.set_defaults(func=_run)
    return p


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["train"]:  # `python -m softpick_bench.train.command --config ...`
        argv = ["train"] + argv
    parser = argparse.ArgumentParser(prog="softpick-bench")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
