"""Tidy results and degradation tables.

Tidy CSV: one row per pair × attention kind × quant spec × task × metric. Markdown:
per pair and metric, rows = quant spec, columns = softmax, softpick, each one's change
from its OWN unquantized value, and the softpick-minus-softmax difference in that
change (negative = softpick degrades less for lower-is-better metrics).
"""

from __future__ import annotations

import math

import pandas as pd

from softpick_bench.quant.spec import QuantSpec

KINDS = ("softmax", "softpick")


def _kv_error(details: dict) -> float | None:
    kv = details.get("kv")
    if not kv:
        return None
    return max(kv.get("rel_error_keys") or 0.0, kv.get("rel_error_values") or 0.0)


def tidy(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        report = r.get("quant_report") or {}
        details = report.get("details") or {}
        for m in r.get("metrics", []):
            rows.append(
                {
                    "pair": r["pair"],
                    "kind": r["kind"],
                    "quant": r["quant_label"],
                    "method": r["quant"]["method"],
                    "bits": r["quant"]["bits"],
                    "group_size": r["quant"]["group_size"],
                    "symmetric": r["quant"]["symmetric"],
                    "skip": ",".join(r["quant"]["skip"]),
                    "task": r["task"]["name"],
                    "metric": m["metric"],
                    "value": m["value"],
                    "stderr": m.get("stderr"),
                    "higher_is_better": m.get("higher_is_better"),
                    "layers_quantized": report.get("layers_quantized"),
                    "layers_total": report.get("layers_total"),
                    "rel_weight_error": report.get("mean_rel_weight_error"),
                    "rel_act_error": details.get("activation", {}).get("mean_rel_error"),
                    "rel_kv_error": _kv_error(details),
                    "rel_probs_error": details.get("probs", {}).get("rel_error"),
                    "effective_bits": report.get("effective_bits"),
                    "quantize_s": r["timing"]["quantize_s"],
                    "evaluate_s": r["timing"]["evaluate_s"],
                    "dtype": r["dtype"],
                    "device": r["device"],
                    "seed": r["seed"],
                    "checkpoint": r["checkpoint"],
                    "fingerprint": r["fingerprint"],
                    "quant_json": QuantSpec.from_dict(
                        {**r["quant"], "skip": tuple(r["quant"]["skip"])}
                    ).to_json(),
                    "key": r["key"],
                }
            )
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values(["pair", "task", "metric", "quant", "kind"], kind="stable").reset_index(drop=True)
    return df


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if abs(x) >= 1e4 or (abs(x) < 1e-3 and x != 0):
        return f"{x:.3g}"
    return f"{x:.4g}" if abs(x) < 100 else f"{x:.1f}"


def _fmt_count(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else str(int(x))


def _fmt_delta(x) -> str:
    s = _fmt(x)
    return s if s == "–" or s.startswith("-") else "+" + s


def degradation(df: pd.DataFrame) -> pd.DataFrame:
    """Wide table per (pair, task, metric, quant): both kinds, their changes, the difference."""
    if df.empty:
        return df
    wide = df.pivot_table(index=["pair", "task", "metric", "quant"], columns="kind", values="value", aggfunc="first")
    wide = wide.reindex(columns=list(KINDS))
    base = wide.xs("none", level="quant", drop_level=True) if "none" in wide.index.get_level_values("quant") else None
    out = wide.reset_index()
    keys = pd.MultiIndex.from_frame(out[["pair", "task", "metric"]])
    for kind in KINDS:
        ref = base[kind].reindex(keys).to_numpy() if base is not None else float("nan")
        out[f"d_{kind}"] = out[kind] - ref
    out["d_softpick_minus_d_softmax"] = out["d_softpick"] - out["d_softmax"]
    return out


def _quant_order(df: pd.DataFrame) -> list[str]:
    """Baseline first, then by method and bits as they first appear in the tidy table."""
    seen = list(dict.fromkeys(df.sort_values(["method", "bits"], na_position="first")["quant"]))
    return (["none"] if "none" in seen else []) + [q for q in seen if q != "none"]


def markdown(df: pd.DataFrame, skipped: list[dict] = (), errors: list[dict] = ()) -> str:
    lines = []
    if df.empty:
        lines.append("No finished cells.")
    else:
        deg = degradation(df)
        order = _quant_order(df)
        for (pair, task, metric), part in deg.groupby(["pair", "task", "metric"], sort=True):
            hib = df[(df.task == task) & (df.metric == metric)]["higher_is_better"].dropna()
            better = "" if not len(hib) else (" (higher is better)" if bool(hib.iloc[0]) else " (lower is better)")
            lines += [
                f"### {pair} · {task} · {metric}{better}",
                "",
                "| quant | softmax | softpick | Δ softmax | Δ softpick | Δ softpick − Δ softmax |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            part = part.set_index("quant").reindex([q for q in order if q in set(part["quant"])])
            for quant, r in part.iterrows():
                lines.append(
                    f"| {quant} | {_fmt(r['softmax'])} | {_fmt(r['softpick'])} | {_fmt_delta(r['d_softmax'])} "
                    f"| {_fmt_delta(r['d_softpick'])} | {_fmt_delta(r['d_softpick_minus_d_softmax'])} |"
                )
            lines.append("")
        proof = df.drop_duplicates(["pair", "kind", "quant"])
        proof = proof[proof.quant != "none"]
        if not proof.empty:
            lines += [
                "### Proof of quantization",
                "",
                "| pair | kind | quant | layers quantized | rel. weight error | bits/param "
                "| rel. act / KV / probs error | skipped |",
                "|---|---|---|---:|---:|---:|---|---|",
            ]
            for _, r in proof.iterrows():
                lines.append(
                    f"| {r['pair']} | {r['kind']} | {r['quant']} | {_fmt_count(r['layers_quantized'])}/{_fmt_count(r['layers_total'])} "
                    f"| {_fmt(r['rel_weight_error'])} | {_fmt(r['effective_bits'])} "
                    f"| {_fmt(r['rel_act_error'])} / {_fmt(r['rel_kv_error'])} / {_fmt(r['rel_probs_error'])} "
                    f"| {r['skip'] or '–'} |"
                )
            lines.append("")
    if skipped:
        lines += ["### Skipped cells", ""]
        lines += [f"- {s['cell']}: {s['reason']}" for s in skipped]
        lines.append("")
    if errors:
        lines += ["### Failed cells (retried on the next run)", ""]
        lines += [f"- {e['pair']}/{e['kind']} {e['quant_label']} {e['task']['name']}: {e['error']}" for e in errors]
        lines.append("")
    return "\n".join(lines)
