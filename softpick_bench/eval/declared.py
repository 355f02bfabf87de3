"""What each evaluation task is, apart from how it runs: its name, options, description, packages.

This module imports neither torch nor transformers nor lm_eval, so a sweep config's `tasks:` can be
checked (eval.tasks.make_spec) before any of them load. It is the one table of the built-in tasks'
options; the evaluator modules (perplexity, analysis, harness.evaluate) attach their `run` to a
name declared here (eval.tasks.implements). A task of one's own declares and implements itself in
one go (eval.tasks.register_task).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softpick_bench.errors import TaskError
from softpick_bench.eval.harness.tasks import HARNESS_TASKS


@dataclass(frozen=True)
class TaskOption:
    type: type | tuple[type, ...]
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None  # value -> what would be valid, or None if fine


def at_least(low: int) -> Callable[[Any], str | None]:
    """A TaskOption check: an integer >= low."""
    return lambda value: None if value >= low else f"must be >= {low}"


def in_range(low: int, high: int) -> Callable[[Any], str | None]:
    """A TaskOption check: an integer in low..high (both included)."""
    return lambda value: None if low <= value <= high else f"must be in {low}..{high}"


FORWARDS = ("eager", "fused")  # how the model's forward runs while a task scores (models/fused.py)


def _check_forward(value: str) -> str | None:
    return None if value in FORWARDS else f"is not one of {', '.join(FORWARDS)}"


FORWARD_OPTION = TaskOption(
    str, "eager",
    "'eager': transformers' modules as they are; 'fused': the decoder's norms, rotary embedding, SwiGLU and "
    "residual adds fused by torch.compile (Llama only; bf16 results differ by rounding, models/fused.py)",
    _check_forward,
)


@dataclass(frozen=True)
class TaskDecl:
    name: str
    options: dict[str, TaskOption]
    description: str
    packages: tuple[str, ...] = ()  # distributions whose version can change results (cache key)


DECLARED: dict[str, TaskDecl] = {}


def declare(name: str, options: dict[str, TaskOption], description: str, packages: tuple[str, ...] = ()) -> TaskDecl:
    DECLARED[name] = TaskDecl(name=name, options=options, description=description, packages=tuple(packages))
    return DECLARED[name]


def task_names() -> list[str]:
    return sorted(DECLARED)


def declared_task(name: str) -> TaskDecl:
    if name not in DECLARED:
        raise TaskError(f"unknown task {name!r}; valid: {', '.join(task_names())}")
    return DECLARED[name]


# --- wikitext2 (eval/perplexity.py) ---------------------------------------------------------------

declare(
    "wikitext2",
    options={
        "seq_len": TaskOption(int, 2048, "window length in tokens"),
        "batch_size": TaskOption(int, 8, "windows per forward pass"),
        "max_windows": TaskOption(int, None, "evaluate only the first N windows (None = all)"),
        "forward": FORWARD_OPTION,
    },
    description="WikiText-2 raw test perplexity, GPTQ convention (metric ppl_gptq)",
)

# --- analysis (eval/analysis.py) ------------------------------------------------------------------

ANALYSIS_SOURCE = "corpus-heldout"  # the shipped held-out corpus slice (data/corpus-heldout)


def _check_source(source: str) -> str | None:
    if source == ANALYSIS_SOURCE or Path(source).is_file():
        return None
    return f"names no file; valid: {ANALYSIS_SOURCE!r} or an existing text file (.txt, .txt.gz)"


declare(
    "analysis",
    options={
        "n_samples": TaskOption(int, 100, "sample sequences (one forward pass each)", at_least(1)),
        "seq_len": TaskOption(int, 64, "tokens per sample, bos included (Gu et al.'s sink metric uses 64)",
                              at_least(2)),
        "seed": TaskOption(int, 0, "which windows of the sample text are taken", in_range(0, 2**32 - 1)),
        "source": TaskOption(str, ANALYSIS_SOURCE, "'corpus-heldout' (held-out corpus slice) or a text file path",
                             _check_source),
        "prepend_bos": TaskOption(bool, True, "start every sample with bos (False: an arbitrary text token first)"),
    },
    description="paper section 4: sink rate, kurtosis, hidden min/max, attention sparsity, dead heads",
)

# --- the lm-eval tasks (eval/harness/evaluate.py), one per HARNESS_TASKS entry --------------------

HARNESS_OPTIONS = {
    "limit": TaskOption(int, None, "evaluate only the first N documents (None = all)"),
    "num_fewshot": TaskOption(int, 0, "few-shot examples (the paper is zero-shot; >0 needs source 'hub')"),
    "batch_size": TaskOption(int, 32, "most requests per forward pass"),
    "batch_tokens": TaskOption(int, None, "most padded tokens per forward pass (None = no budget)"),
    "max_length": TaskOption(int, None, "context window in tokens (None = the model's max_position_embeddings)"),
    "source": TaskOption(str, "local", "'local': shipped data through our YAMLs; 'hub': lm-eval's hub tasks"),
    "bootstrap_iters": TaskOption(int, 100000, "bootstrap resamples for stderrs lm-eval bootstraps (perplexity)"),
    "forward": FORWARD_OPTION,
}

for _name, _task in HARNESS_TASKS.items():
    declare(
        _name,
        options=HARNESS_OPTIONS,
        description=f"lm-eval {_task.lm_eval_name} (official task definition; zero-shot on shipped data by default)",
    )
