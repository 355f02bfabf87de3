"""Did a retrain reproduce a pair bit for bit? Compare two training runs (or a run and a record).

    python -m softpick_bench.train.reproduce RUN_A RUN_B [--out record.md]

Each side is a training output folder (its summary.json, checked against the weights files
beside it) or a summary.json alone (a committed record). For every kind the weights' sha256,
the validation curve and the settings that computed them are compared; the Markdown table
goes to stdout (and --out). Exit 0 when every kind is bit-identical, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from softpick_bench.train.determinism import WEIGHTS_FILE, weights_sha256


def read_run(path: Path) -> dict:
    """{kind: {"sha256", "val_curve", "attention", "source"}} from a run folder or its summary.json."""
    path = Path(path)
    summary_file = path / "summary.json" if path.is_dir() else path
    if not summary_file.is_file():
        raise ValueError(f"{path}: no summary.json (expected a training output folder or its summary.json)")
    summary = json.loads(summary_file.read_text())
    sides = {}
    for kind, side in summary.get("sides", {}).items():
        recorded = side.get("weights_sha256")
        weights = summary_file.parent / kind / WEIGHTS_FILE
        actual = weights_sha256(weights.parent) if weights.is_file() else None
        if recorded is None and actual is None:
            raise ValueError(f"{summary_file}: {kind} has no weights_sha256 and no {kind}/{WEIGHTS_FILE} beside it")
        if recorded is not None and actual is not None and recorded != actual:
            raise ValueError(f"{weights}: sha256 {actual[:16]} differs from the {recorded[:16]} its summary records")
        sides[kind] = {"sha256": actual or recorded, "val_curve": side.get("val_curve"),
                       "attention": summary.get("attention"), "source": "weights file" if actual else "record"}
    if not sides:
        raise ValueError(f"{summary_file}: no trained sides")
    return sides


def compare(a: dict, b: dict) -> list[dict]:
    """One row per kind present in either run."""
    rows = []
    for kind in sorted(set(a) | set(b)):
        x, y = a.get(kind), b.get(kind)
        if x is None or y is None:
            rows.append({"kind": kind, "identical": False, "why": "missing in one run"})
            continue
        same_weights = x["sha256"] == y["sha256"]
        same_curve = x["val_curve"] == y["val_curve"]
        rows.append({"kind": kind, "a": x["sha256"], "b": y["sha256"], "identical": same_weights,
                     "val_curve_identical": same_curve, "attention": (x["attention"] or {}).get("backend"),
                     "why": "" if same_weights else "weights differ"})
    return rows


def markdown(rows: list[dict], name_a: str, name_b: str) -> str:
    lines = [f"| kind | attention | weights sha256 ({name_a}) | weights sha256 ({name_b}) | bit-identical | "
             "validation curve identical |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r.get('attention') or '-'} | {r.get('a', '-')} | {r.get('b', '-')} | "
                     f"{'yes' if r['identical'] else 'NO: ' + r['why']} | "
                     f"{'yes' if r.get('val_curve_identical') else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m softpick_bench.train.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    try:
        rows = compare(read_run(args.run_a), read_run(args.run_b))
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = markdown(rows, args.run_a.name if args.run_a.is_dir() else args.run_a.parent.name,
                     args.run_b.name if args.run_b.is_dir() else args.run_b.parent.name)
    print(table, end="")
    if args.out:
        args.out.write_text(table)
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
