"""Lines for `softpick-bench list` describing the quant-spec axes beyond the weight methods."""

from __future__ import annotations

from softpick_bench.quant.format_quant import ACT_FORMAT_GRANULARITIES, ACT_FORMATS
from softpick_bench.quant.transforms.base import get_transform, transform_names


def axis_lines() -> list[str]:
    lines = []
    for name in transform_names():
        t = get_transform(name)
        lines.append(f"transforms: {name:<12} {t.description}; options {sorted(t.options)}")
    for fmt, bits in ACT_FORMATS.items():
        if fmt == "int":
            lines.append("act_format: int          integer grid (default); act_bits 2-8")
            continue
        gran = ACT_FORMAT_GRANULARITIES.get(fmt, ("per_token", "per_tensor"))
        lines.append(f"act_format: {fmt:<12} act_bits {bits}; act_granularity {list(gran)}")
    lines.append("kv_keep_first: N          first N positions' keys and values kept in full precision (needs kv_bits)")
    return lines
