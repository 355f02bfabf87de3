"""lm-eval task definitions: our YAML templates made concrete, or lm-eval's hub tasks.

The shipped YAMLs (softpick_bench/eval/lm_eval_tasks) `include:` the official task YAML
inside the installed lm_eval package and override only where the data comes from. lm-eval
needs absolute paths there, and neither the lm_eval install nor our package's location is
known before run time, so the templates are written, with the two paths filled in, into a
fresh temporary folder that a TaskManager then reads (include_defaults=False: nothing else).
"""

from __future__ import annotations

import json
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from softpick_bench.errors import TaskError

SOURCES = ("local", "hub")


@dataclass(frozen=True)
class HarnessTask:
    """One lm-eval task we ship: its name in lm-eval and the data file that replaces the hub's."""

    lm_eval_name: str
    paper: bool  # one of the paper's five benchmarks


HARNESS_TASKS: dict[str, HarnessTask] = {
    "arc_easy": HarnessTask("arc_easy", True),
    "arc_challenge": HarnessTask("arc_challenge", False),
    "lambada_openai": HarnessTask("lambada_openai", True),
    "piqa": HarnessTask("piqa", True),
    "sciq": HarnessTask("sciq", True),
    "hellaswag": HarnessTask("hellaswag", False),
    "winogrande": HarnessTask("winogrande", False),
    "boolq": HarnessTask("boolq", False),
    "openbookqa": HarnessTask("openbookqa", False),
    # lm-eval's `wikitext` is document-level word perplexity, not the GPTQ-convention `wikitext2` task.
    "wikitext_word": HarnessTask("wikitext", True),
}

_stack = ExitStack()  # keeps resource files extracted (zip installs) for the life of the process


def _package_path(package: str, name: str) -> Path:
    return _stack.enter_context(resources.as_file(resources.files(package).joinpath(name)))


def lm_eval_tasks_dir() -> Path:
    """The folder of lm-eval's own task YAMLs, inside the installed package."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def data_dir() -> Path:
    return _package_path("softpick_bench.data", "tasks")


def templates_dir() -> Path:
    return _package_path("softpick_bench.eval", "lm_eval_tasks")


def data_manifest() -> dict:
    return json.loads((data_dir() / "manifest.json").read_text())


def render_template(text: str, lm_eval_dir: Path, data: Path) -> str:
    return text.replace("@LM_EVAL_TASKS@", lm_eval_dir.as_posix()).replace("@DATA@", data.as_posix())


@cache
def materialized_tasks_dir() -> Path:
    """A temporary folder holding our YAMLs with absolute paths filled in (made once per process)."""
    out = Path(_stack.enter_context(tempfile.TemporaryDirectory(prefix="softpick-lm-eval-tasks-")))
    lm_dir, data = lm_eval_tasks_dir(), data_dir()
    for template in sorted(templates_dir().glob("*.yaml")):
        (out / template.name).write_text(render_template(template.read_text(), lm_dir, data))
    return out


def task_manager(source: str):
    """A TaskManager that knows only our local tasks ("local") or lm-eval's built-in ones ("hub")."""
    from lm_eval.tasks import TaskManager

    if source == "local":
        return TaskManager(include_path=str(materialized_tasks_dir()), include_defaults=False)
    if source == "hub":
        return TaskManager()
    raise TaskError(f"harness source {source!r} unknown; valid: {', '.join(SOURCES)}")


def load_task(name: str, source: str = "local"):
    """The lm-eval Task object for our registry name `name` (documents loaded)."""
    if name not in HARNESS_TASKS:
        raise TaskError(f"harness task {name!r} unknown; valid: {', '.join(HARNESS_TASKS)}")
    lm_name = HARNESS_TASKS[name].lm_eval_name
    return task_manager(source).load([lm_name])["tasks"][lm_name]
