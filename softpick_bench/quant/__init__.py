"""Quantizers behind one interface (base.py); one module per method."""

import importlib

# modules that register a backend when imported; an optional dependency that is
# missing makes its backend unavailable, and `methods()` then does not list it
BACKEND_MODULES = ("rtn", "gptq", "hqq_backend", "bnb", "format_quant")


def load_backends() -> None:
    for name in BACKEND_MODULES:
        importlib.import_module(f"softpick_bench.quant.{name}")
