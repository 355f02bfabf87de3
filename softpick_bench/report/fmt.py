"""Number formatting, one rule per kind of number so that a table reads the same everywhere."""

from __future__ import annotations

import math

import pandas as pd

DASH = "–"


def missing(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def decimals_for(values) -> int:
    """Decimals giving 4 significant digits to the largest magnitude in a column (0 to 6)."""
    mags = [abs(float(v)) for v in values if not missing(v) and float(v) != 0 and math.isfinite(float(v))]
    if not mags:
        return 3
    return min(6, max(0, 3 - math.floor(math.log10(max(mags)))))


def fixed(x, decimals: int, sign: bool = False) -> str:
    if missing(x):
        return DASH
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if round(x, decimals) == 0:  # no "-0.000" next to "0.000"
        x = 0.0
    return f"{x:+.{decimals}f}" if sign and x != 0 else f"{x:.{decimals}f}"


def pct(x) -> str:
    """A relative change as a signed percentage with 2 decimals."""
    if missing(x):
        return DASH
    return f"{100 * float(x):+.2f}%"


def interval(low, high) -> str:
    if missing(low) or missing(high):
        return DASH
    return f"[{pct(low)}, {pct(high)}]"


def p_value(p) -> str:
    if missing(p):
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def count(x) -> str:
    return DASH if missing(x) else f"{int(x):,}"
