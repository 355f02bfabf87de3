"""Numbers that are not results: a non-finite metric or quantization error fails its cell.

A NaN perplexity stored as `ok` would read as a missing value ("–", an empty CSV field)
and a NaN weight error would hide a broken quantizer; both are raised here as
NonFiniteError, so the runner writes the cell as an error record with the reason.
"""

from __future__ import annotations

import math
from dataclasses import asdict, is_dataclass

from softpick_bench.errors import SoftpickBenchError


class NonFiniteError(SoftpickBenchError):
    """A metric or a quantization measurement is NaN or infinite."""


def _name(x: float) -> str:
    return "NaN" if math.isnan(x) else ("+inf" if x > 0 else "-inf")


def nonfinite_paths(value, path: str = "") -> list[tuple[str, float]]:
    """(dotted path, value) of every NaN / inf float inside nested dicts, lists and dataclasses."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(path or "value", value)]
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in nonfinite_paths(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, (list, tuple)):
        return [hit for i, v in enumerate(value) for hit in nonfinite_paths(v, f"{path}[{i}]")]
    return []


def check_metrics(metrics) -> None:
    """Raise NonFiniteError naming the first metric whose value, stderr or details are not finite."""
    for m in metrics:
        if isinstance(m.value, (int, float)) and not math.isfinite(m.value):
            raise NonFiniteError(f"{m.metric} is {_name(m.value)}")
        hits = nonfinite_paths({"stderr": m.stderr, "details": m.details})
        if hits:
            where, x = hits[0]
            raise NonFiniteError(f"{m.metric}: {where} is {_name(x)}")


def check_quant_report(report) -> None:
    """Raise NonFiniteError when the QuantReport measured a non-finite error (the weights or scales overflowed)."""
    if report is None:
        return
    hits = nonfinite_paths(report.to_dict())
    if hits:
        where, x = hits[0]
        raise NonFiniteError(f"quantization measured {where} = {_name(x)}: the quantized model holds non-finite values")
