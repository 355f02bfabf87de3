"""Evaluation: tasks as data (tasks.py), declared without torch (declared.py), each evaluator a module
that attaches its `run` to a declared task."""

import importlib

TASK_MODULES = ("perplexity", "analysis", "harness.evaluate")


def load_task_modules() -> None:
    """Import every evaluator (torch, transformers): only when a task runs (validation needs the declarations only)."""
    for name in TASK_MODULES:
        importlib.import_module(f"softpick_bench.eval.{name}")
