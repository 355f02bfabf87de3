"""Evaluation: tasks as data (tasks.py), each evaluator a module that registers itself."""

import importlib

TASK_MODULES = ("perplexity", "analysis", "harness")

for _name in TASK_MODULES:
    importlib.import_module(f"softpick_bench.eval.{_name}")
