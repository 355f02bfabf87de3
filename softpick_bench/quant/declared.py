"""What each weight quantization method accepts, importable without torch or the backend libraries.

The config validates a `quant:` entry against these declarations (name, valid bits, options with
their one-line help) before torch, bitsandbytes or hqq load; each backend in quant/*.py takes its
`bits` and `options` from here when it registers (quant.base.register), so there is one table.
A backend of one's own (a module named in SOFTPICK_BENCH_BACKENDS) declares itself through its
class attributes when it registers; `methods()` imports those modules first.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field

from softpick_bench.errors import UnsupportedQuantError

DEFAULT_CALIBRATION = "gutenberg"  # quant.calibration.DEFAULT_SOURCE: the shipped calibration text
BNB_QUANT_TYPES = ("nf4", "fp4")  # bitsandbytes 4-bit formats (quant.bnb.QUANT_TYPES)
BNB_BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)  # (quant.bnb.BLOCKSIZES)

# extra modules (comma-separated import paths) that register backends of one's own, e.g. a test's;
# an env var so that child processes and Ray workers of a sweep load them too
BACKENDS_ENV = "SOFTPICK_BENCH_BACKENDS"


@dataclass(frozen=True)
class MethodDecl:
    name: str
    bits: frozenset[int]  # the bit widths the backend has a mode for
    options: dict[str, str] = field(default_factory=dict)  # option name -> one-line description


METHODS: dict[str, MethodDecl] = {}


def declare(name: str, bits, options: dict[str, str] | None = None) -> MethodDecl:
    METHODS[name] = MethodDecl(name=name, bits=frozenset(bits), options=dict(options or {}))
    return METHODS[name]


def load_plugins() -> None:
    """Import the modules named in SOFTPICK_BENCH_BACKENDS (each registers, so declares, its backends)."""
    for name in filter(None, (n.strip() for n in os.environ.get(BACKENDS_ENV, "").split(","))):
        importlib.import_module(name)


def methods() -> list[str]:
    load_plugins()
    return ["none", *sorted(METHODS)]


def declared_method(name: str) -> MethodDecl:
    if name not in METHODS:
        load_plugins()
    if name not in METHODS:
        raise UnsupportedQuantError(f"unknown quantization method {name!r}; valid: {', '.join(methods())}")
    return METHODS[name]


declare("rtn", range(2, 9))  # quant/rtn.py
declare("gptq", range(2, 9), {  # quant/gptq.py
    "damp": "dampening, as a fraction of the mean Hessian diagonal added to it (default 0.01)",
    "act_order": "quantize columns by decreasing Hessian diagonal, with static groups (default false)",
    "block_size": "columns per lazy-update block (default 128)",
    "nsamples": "calibration sequences (default 128)",
    "seq_len": "calibration sequence length (default 2048, capped at the model's max positions)",
    "calibration": f"calibration text: {DEFAULT_CALIBRATION!r} (shipped slice) or a .txt/.txt.gz path",
})
declare("hqq", {1, 2, 3, 4, 5, 6, 8}, {  # quant/hqq_backend.py; hqq has no 7-bit packing
    "axis": "axis along which groups are formed: 1 (input dim, default) or 0",
})
declare("bnb", {4, 8}, {  # quant/bnb.py
    "quant_type": "4-bit only: nf4 (default) or fp4",
    "blocksize": "4-bit only: weights per absmax block (default 64)",
    "double_quant": "4-bit only: quantize the absmax values too (default false)",
    "threshold": "8-bit only: LLM.int8 outlier threshold (default 6.0; 0.0 = no outlier columns)",
})
declare("fp8", {8}, {"format": "e4m3 (default) or e5m2"})  # quant/format_quant.py
declare("mxfp4", {4})  # quant/format_quant.py
declare("nvfp4", {4})  # quant/format_quant.py
