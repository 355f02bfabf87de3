"""The paper's Table 2 for our pairs, from the files a training run writes.

    python -m softpick_bench.train.table2 results/training/{micro,micro-v1,demo,demo-seed1234,demo-study-s4321,demo-study-s1234} > results/table2.md
    python -m softpick_bench.train.table2 --grid results/training/recipe-grid/round1   # one row per run

Each folder holds summary.json (losses) and analysis.json (the analysis task's metrics); a pair is
named after its folder. `--grid` renders the recipe-search table of a folder of such runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# PAPER.md section 4 (340M, eps 0.3); the paper reports these, not its loss values here
PAPER_340M = {
    "softmax": {"sink_rate_0.3": 0.6341, "kurtosis": 33510.81, "hidden_min": -207.55, "hidden_max": 240.27,
                "attn_sparsity": 0.045},
    "softpick": {"sink_rate_0.3": 0.0, "kurtosis": 340.96, "hidden_min": -45.03, "hidden_max": 36.21,
                 "attn_sparsity": 0.9934},
}
COLUMNS = ("train loss", "val loss", "sink 0.2", "sink 0.3", "kurtosis", "min", "max", "sparsity", "dead heads")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def _num(v: float | None, fmt: str = "{:.4f}") -> str:
    return "–" if v is None else fmt.format(v)


def rows_for(folder: Path) -> list[str]:
    summary = json.loads((folder / "summary.json").read_text())
    analysis = json.loads((folder / "analysis.json").read_text())
    name = folder.name
    out = []
    for kind, side in summary["sides"].items():
        m = analysis[kind]["values"]
        cells = [_num(side["final_train_loss"]), _num(side["final_val_loss"]), _pct(m["sink_rate_0.2"]),
                 _pct(m["sink_rate_0.3"]), _num(m["kurtosis"], "{:.2f}"), _num(m["hidden_min"], "{:.2f}"),
                 _num(m["hidden_max"], "{:.2f}"), _pct(m["attn_sparsity"]), _pct(m["dead_heads"])]
        params = side["params"] / 1e6
        out.append(f"| {name} ({params:.1f}M) | {kind} | " + " | ".join(cells) + " |")
    return out


def notes_for(folder: Path) -> list[str]:
    summary = json.loads((folder / "summary.json").read_text())
    analysis = json.loads((folder / "analysis.json").read_text())
    cfg, sides = summary["config"], summary["sides"]
    det = next(iter(analysis.values()))["details"]
    gap = sides["softpick"]["final_val_loss"] - sides["softmax"]["final_val_loss"]
    m = cfg["model"]
    backends = ", ".join(f"{k}: {v['train_backend']} ({v['tok_per_s']:.0f} tok/s)" for k, v in sides.items())
    return [
        f"- **{folder.name}**: hidden {m['hidden']}, {m['layers']} layers, {m['heads']} heads, context {cfg['seq_len']}; "
        f"{summary['steps_done']} steps x {cfg['batch_size']} x {cfg['seq_len']} = {summary['tokens_seen'] / 1e6:.1f}M tokens, "
        f"lr {cfg['lr']}, seed {cfg['seed']}{' (TRUNCATED by time limit)' if summary['truncated'] else ''}; "
        f"{summary.get('gpu') or summary['device']}; training attention {backends}. "
        f"Validation-loss gap softpick - softmax: {gap:+.4f}. Analysis on {det['n_samples']} samples x {det['seq_len']} tokens.",
    ]


def trajectory(folder: Path) -> list[str]:
    """Sink rate and kurtosis at each evaluation during training (train_log.jsonl 'analysis' records)."""
    records = [json.loads(x) for x in (folder / "train_log.jsonl").read_text().splitlines() if x.strip()]
    tracked = [r for r in records if r.get("event") == "analysis"]
    val = {(r["kind"], r["step"]): r["val_loss"] for r in records if r.get("event") == "val"}
    if not tracked:
        return []
    first = tracked[0]
    lines = ["| step | softmax sink 0.3 | softpick sink 0.3 | softmax kurtosis | softpick kurtosis | ratio | "
             "softmax val | softpick val |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for step in sorted({r["step"] for r in tracked}):
        by = {r["kind"]: r for r in tracked if r["step"] == step}
        if set(by) != {"softmax", "softpick"}:
            continue
        lines.append(f"| {step} | {_pct(by['softmax']['sink_rate_0.3'])} | {_pct(by['softpick']['sink_rate_0.3'])} | "
                     f"{by['softmax']['kurtosis']:.1f} | {by['softpick']['kurtosis']:.1f} | "
                     f"{by['softmax']['kurtosis'] / by['softpick']['kurtosis']:.2f} | "
                     f"{val.get(('softmax', step), float('nan')):.4f} | {val.get(('softpick', step), float('nan')):.4f} |")
    return [f"During training ({first['n_samples']} samples x {first['seq_len']} tokens):", ""] + lines


def render(folders: list[Path]) -> str:
    lines = [
        "# Table 2 for the project's pairs",
        "",
        "Softmax vs softpick, same architecture, data order, seed and hyperparameters. Losses are "
        "nats/token (project BPE, vocab 8192): final train loss = mean over the last 50 steps; validation "
        "loss on the held-out corpus shard (part-003). Analysis metrics (PAPER.md section 4, "
        "softpick_bench/eval/analysis.py) on float32 weights, from held-out text.",
        "",
        "| pair | attention | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for folder in folders:
        lines += rows_for(folder)
    for kind, m in PAPER_340M.items():
        lines.append(f"| paper 340M (52B tokens) | {kind} | – | – | – | {_pct(m['sink_rate_0.3'])} | "
                     f"{m['kurtosis']:.2f} | {m['hidden_min']:.2f} | {m['hidden_max']:.2f} | "
                     f"{'~' if kind == 'softmax' else ''}{_pct(m['attn_sparsity'])} | – |")
    lines += ["", "Notes:", ""]
    for folder in folders:
        lines += notes_for(folder)
    lines.append("- Paper 340M: validation-loss gap 0.004 (softpick worse); its losses use the Llama-2 tokenizer "
                 "(vocab 32000) and are not comparable with ours.")
    for folder in folders:
        rows = trajectory(folder)
        if rows:
            lines += ["", f"### {folder.name}: metrics over training", ""] + rows
    return "\n".join(lines) + "\n"


GRID_OPTIONS = ("rows", "lr", "weight_decay", "seed")


def grid_table(folder: Path) -> str:
    """One row per training run under `folder`: recipe options, validation losses and the sink and
    kurtosis metrics (100 samples x 64 tokens, with and without a bos first token)."""
    lines = ["| run | rows | lr | wd | seed | steps | val softmax | val softpick | sink 0.3 softmax | "
             "sink 0.3 softpick | no-bos softmax | no-bos softpick | kurtosis softmax | kurtosis softpick | ratio |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in sorted(p for p in folder.iterdir() if (p / "analysis.json").is_file()):
        summary, bos, nobos = (json.loads((run / f).read_text())
                               for f in ("summary.json", "analysis.json", "analysis_nobos.json"))
        cfg, sides = summary["config"], summary["sides"]
        sm, sp = bos["softmax"]["values"], bos["softpick"]["values"]
        nobos_sm, nobos_sp = nobos["softmax"]["values"], nobos["softpick"]["values"]
        lines.append(
            f"| {run.name} | " + " | ".join(str(cfg[k]) for k in GRID_OPTIONS) + f" | {summary['steps_done']} | "
            f"{sides['softmax']['final_val_loss']:.4f} | {sides['softpick']['final_val_loss']:.4f} | "
            f"{_pct(sm['sink_rate_0.3'])} | {_pct(sp['sink_rate_0.3'])} | "
            f"{_pct(nobos_sm['sink_rate_0.3'])} | {_pct(nobos_sp['sink_rate_0.3'])} | "
            f"{sm['kurtosis']:.1f} | {sp['kurtosis']:.1f} | {sm['kurtosis'] / sp['kurtosis']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--grid"]:
        print("\n".join(grid_table(Path(p)) for p in sys.argv[2:]), end="")
    else:
        print(render([Path(p) for p in sys.argv[1:]]), end="")
