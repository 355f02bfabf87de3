"""Quantizers behind one interface (base.py); one module per method, declared in declared.py."""

import importlib

from softpick_bench.quant.declared import BACKENDS_ENV, load_plugins  # noqa: F401  (BACKENDS_ENV re-exported)

# modules that register a backend when imported; a backend whose optional dependency is missing
# still registers, and refuses every cell in its check() (the plan lists them as skipped)
BACKEND_MODULES = ("rtn", "gptq", "hqq_backend", "bnb", "format_quant")


def load_backends() -> None:
    for name in BACKEND_MODULES:
        importlib.import_module(f"softpick_bench.quant.{name}")
    load_plugins()  # SOFTPICK_BENCH_BACKENDS: backends of one's own
