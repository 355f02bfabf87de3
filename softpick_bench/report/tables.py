"""The tidy table: one row per pair × attention kind × replicate × quant spec × task × metric.

Written as results.csv; every other part of the report is computed from it (and, for
significance, from the per-item files). Integer columns stay integers (pandas Int64) and
every metric has its direction. Records from older sweeps (no replicate, no items, no
checkpoint_given) are read with defaults.
"""

from __future__ import annotations

from dataclasses import fields

import pandas as pd

from softpick_bench.quant.spec import QuantSpec
from softpick_bench.report.directions import direction, higher_is_better

KINDS = ("softmax", "softpick")
INT_COLUMNS = ("bits", "group_size", "act_bits", "kv_bits", "probs_bits", "layers_quantized", "layers_total",
               "seed", "replicate", "n_items", "n_items_total", "limit", "tokens", "tokens_total")
_SPEC_FIELDS = {f.name for f in fields(QuantSpec)}


def _kv_error(details: dict) -> float | None:
    kv = details.get("kv")
    if not kv:
        return None
    return max(kv.get("rel_error_keys") or 0.0, kv.get("rel_error_values") or 0.0)


def coverage(task: str, details: dict) -> dict:
    """What a value covers: items (windows, documents or samples) and tokens, from the metric's details."""
    if "windows" in details:  # wikitext2, GPTQ convention
        seq = details.get("seq_len")
        total = details.get("dataset_tokens")
        return {"item_unit": "windows", "n_items": details["windows"],
                "n_items_total": total // seq if total and seq else None, "limit": None,
                "tokens": details.get("predicted_tokens"), "tokens_total": total}
    if "documents" in details:  # lm-eval tasks
        return {"item_unit": "documents", "n_items": details["documents"],
                "n_items_total": details.get("documents_total"), "limit": details.get("limit"),
                "tokens": None, "tokens_total": None}
    if "n_samples" in details:  # analysis
        seq = details.get("seq_len")
        return {"item_unit": "samples", "n_items": details["n_samples"], "n_items_total": None, "limit": None,
                "tokens": details["n_samples"] * seq if seq else None, "tokens_total": None}
    return {"item_unit": None, "n_items": None, "n_items_total": None, "limit": None, "tokens": None,
            "tokens_total": None}


def quant_axis(q: dict) -> tuple[str, int | None]:
    """(family, bits): the quant spec without its bit width, and the bit width it varies.

    Weight methods vary their weight bits ('rtn-g32' at 2..8; 'rtn+a8tok' is W{bits}A8). A
    modifier alone varies its own bits ('kv-per_token' at 2, 3, 4). Anything else is one point.
    """
    spec = QuantSpec.from_dict({k: (tuple(v) if k == "skip" else v) for k, v in q.items() if k in _SPEC_FIELDS})
    label = spec.label()
    if spec.method != "none":
        return label.replace(f"-w{spec.bits}", "", 1), spec.bits
    mods = [(n, b, g) for n, b, g in (("act", spec.act_bits, spec.act_granularity),
                                     ("kv", spec.kv_bits, spec.kv_granularity), ("probs", spec.probs_bits, None)) if b]
    if len(mods) == 1:
        name, bits, gran = mods[0]
        return (f"{name}-{gran}" if gran else name), bits
    return label, None


def tidy(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        report = r.get("quant_report") or {}
        details = report.get("details") or {}
        q = r["quant"]
        spec = QuantSpec.from_dict({k: (tuple(v) if k == "skip" else v) for k, v in q.items() if k in _SPEC_FIELDS})
        family, axis_bits = quant_axis(q)
        timing = r.get("timing") or {}
        for m in r.get("metrics", []):
            hib = higher_is_better(m["metric"], m.get("higher_is_better"))
            rows.append(
                {
                    "pair": r["pair"],
                    "kind": r["kind"],
                    "replicate": r.get("replicate", 0),
                    "quant": r["quant_label"],
                    "method": q["method"],
                    "family": family,
                    "axis_bits": axis_bits,
                    "bits": q.get("bits"),
                    "group_size": q.get("group_size"),
                    "symmetric": q.get("symmetric"),
                    "grid": q.get("grid"),
                    "act_bits": q.get("act_bits"),
                    "kv_bits": q.get("kv_bits"),
                    "probs_bits": q.get("probs_bits"),
                    "skip": ",".join(q.get("skip", ())),
                    "task": r["task"]["name"],
                    "metric": m["metric"],
                    "value": m["value"],
                    "stderr": m.get("stderr"),
                    "higher_is_better": hib,
                    "direction": direction(m["metric"], m.get("higher_is_better")),
                    **coverage(r["task"]["name"], m.get("details") or {}),
                    "layers_quantized": report.get("layers_quantized"),
                    "layers_total": report.get("layers_total"),
                    "rel_weight_error": report.get("mean_rel_weight_error"),
                    "rel_act_error": details.get("activation", {}).get("mean_rel_error"),
                    "rel_kv_error": _kv_error(details),
                    "rel_probs_error": details.get("probs", {}).get("rel_error"),
                    "effective_bits": report.get("effective_bits"),
                    "quantize_s": timing.get("quantize_s"),
                    "evaluate_s": timing.get("evaluate_s"),
                    "dtype": r["dtype"],
                    "device": r["device"],
                    "seed": r["seed"],
                    "checkpoint": r.get("checkpoint_given") or r["checkpoint"],
                    "fingerprint": r["fingerprint"],
                    "has_items": bool(r.get("has_items", False)),
                    "quant_json": spec.to_json(),
                    "key": r["key"],
                }
            )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col in INT_COLUMNS:
        df[col] = pd.array([None if pd.isna(v) else int(v) for v in df[col]], dtype="Int64")
    df["axis_bits"] = pd.array([None if pd.isna(v) else int(v) for v in df["axis_bits"]], dtype="Int64")
    df["higher_is_better"] = pd.array(list(df["higher_is_better"]), dtype="boolean")
    return df.sort_values(["pair", "task", "metric", "quant", "kind", "replicate"], kind="stable").reset_index(drop=True)


def quant_order(df: pd.DataFrame) -> list[str]:
    """Baseline first, then by family and bits."""
    rows = df.drop_duplicates("quant").sort_values(["method", "family", "axis_bits"], na_position="first")
    seen = list(rows["quant"])
    return (["none"] if "none" in seen else []) + [q for q in seen if q != "none"]
