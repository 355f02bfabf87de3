"""Quantizers behind one interface (base.py); one module per method."""

import importlib
import os

# modules that register a backend when imported; an optional dependency that is
# missing makes its backend unavailable, and `methods()` then does not list it
BACKEND_MODULES = ("rtn", "gptq", "hqq_backend", "bnb", "format_quant")
# extra modules (comma-separated import paths) that register backends of one's own, e.g. a test's;
# an env var so that child processes and Ray workers of a sweep load them too
BACKENDS_ENV = "SOFTPICK_BENCH_BACKENDS"


def load_backends() -> None:
    for name in BACKEND_MODULES:
        importlib.import_module(f"softpick_bench.quant.{name}")
    for name in filter(None, (n.strip() for n in os.environ.get(BACKENDS_ENV, "").split(","))):
        importlib.import_module(name)
