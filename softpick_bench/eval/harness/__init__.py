"""lm-evaluation-harness as the engine for the standard benchmarks (ARC, LAMBADA, PIQA, SciQ, ...).

tasks.py: our task YAMLs (official lm-eval definitions, local data); bridge.py: the model
object handed to lm-eval; evaluate.py: the registry entries (imports lm_eval lazily).
"""

from softpick_bench.eval.harness import evaluate  # noqa: F401  (registers the tasks)
