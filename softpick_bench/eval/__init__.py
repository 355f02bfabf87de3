"""Evaluation: tasks as data (tasks.py), each evaluator a module that registers itself."""

import importlib

TASK_MODULES = ("perplexity", "analysis", "harness")


def load_task_modules() -> None:
    """Import every evaluator (torch, transformers): on first use, so that validation stays light."""
    for name in TASK_MODULES:
        importlib.import_module(f"softpick_bench.eval.{name}")
