"""Evaluation tasks are data: a name plus options, looked up in a registry of evaluators.

A TaskSpec is frozen and JSON-serialisable (it is part of each cell's cache key). An
evaluator receives the model under test and the spec and returns metric records.
Each task declares its options, with defaults (eval/declared.py, no torch), so a config
can be checked before any model, or any evaluator module, is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from softpick_bench.errors import TaskError, shown
from softpick_bench.eval.declared import TaskOption, at_least, in_range  # noqa: F401  (re-exported)
from softpick_bench.eval.declared import declare, declared_task, task_names  # noqa: F401  (task_names too)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        opts = self.options.items() if isinstance(self.options, dict) else self.options
        object.__setattr__(self, "options", tuple(sorted((str(k), v) for k, v in opts)))

    def option(self, key: str) -> Any:
        return dict(self.options)[key]

    def to_dict(self) -> dict:
        return {"name": self.name, "options": dict(self.options)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))


@dataclass
class Metric:
    """One number, with what it needs to be read correctly."""

    metric: str
    value: float
    stderr: float | None = None
    higher_is_better: bool | None = None
    details: dict = field(default_factory=dict)


@dataclass
class TaskOutput:
    """What an evaluator returns: its metrics and, where it has them, the per-item values
    they are aggregated from (softpick_bench.eval.items payload; None for analysis)."""

    metrics: list[Metric]
    items: dict | None = None


@dataclass
class TaskDef:
    name: str
    run: Callable  # (EvalTarget, TaskSpec) -> TaskOutput (or a bare list[Metric])
    options: dict[str, TaskOption]
    description: str
    packages: tuple[str, ...] = ()  # distributions whose version can change results (cache key)


@dataclass
class EvalTarget:
    """The model a task evaluates: whatever was loaded and quantized, with its kind."""

    model: Any
    tokenizer: Any
    kind: str
    device: str
    seed: int = 0
    cache_dir: str | None = None  # the run folder: request caches persist there (None: this process only)


_TASKS: dict[str, TaskDef] = {}  # the declared tasks whose evaluator module has been imported


def implements(name: str):
    """Decorator: `fn` runs the task declared (eval.declared) under `name`."""
    decl = declared_task(name)

    def deco(fn):
        _TASKS[name] = TaskDef(name=name, run=fn, options=decl.options, description=decl.description,
                               packages=decl.packages)
        return fn

    return deco


def register_task(name: str, options: dict[str, TaskOption], description: str, packages: tuple[str, ...] = ()):
    """Decorator for a task of one's own: declare it and implement it in one go."""
    declare(name, options, description, packages)
    return implements(name)


def _load_task_modules() -> None:
    from softpick_bench.eval import load_task_modules

    load_task_modules()


def get_task(name: str) -> TaskDef:
    """The task with its `run`: imports the evaluator modules (torch, transformers) on first use."""
    declared_task(name)
    if name not in _TASKS:
        _load_task_modules()
    if name not in _TASKS:
        raise TaskError(f"task {name!r} is declared but no evaluator module implements it")
    return _TASKS[name]


def make_spec(name: str, given: dict) -> TaskSpec:
    """A spec with every option explicit (defaults filled), so equal tasks share a cache key.

    Raises TaskError naming the unknown option or the wrong type, with the valid ones.
    """
    task = declared_task(name)
    unknown = set(given) - set(task.options)
    if unknown:
        raise TaskError(
            f"task {name!r} has no option(s) {sorted(unknown)}; valid: {sorted(task.options) or 'none'}"
        )
    resolved = {}
    for key, opt in task.options.items():
        value = given.get(key, opt.default)
        wrong_type = value is not None and not isinstance(value, opt.type)
        if wrong_type or (isinstance(value, bool) and opt.type is int):
            raise TaskError(f"task {name!r} option {key!r} must be {opt.type}, got {shown(value)} ({opt.help})")
        problem = None if value is None or opt.check is None else opt.check(value)
        if problem:
            raise TaskError(f"task {name!r} option {key!r} {problem}, got {shown(value)} ({opt.help})")
        resolved[key] = value
    return TaskSpec(name=name, options=tuple(resolved.items()))


def run_task(target: EvalTarget, spec: TaskSpec) -> TaskOutput:
    out = get_task(spec.name).run(target, spec)
    return out if isinstance(out, TaskOutput) else TaskOutput(list(out))
