"""lm-evaluation-harness as the engine for the standard benchmarks (ARC, LAMBADA, PIQA, SciQ, ...).

tasks.py: our task YAMLs (official lm-eval definitions, local data); bridge.py: the model
object handed to lm-eval; evaluate.py: the evaluators of the tasks declared in eval/declared.py
(imports lm_eval lazily). Importing this package registers nothing: eval.declared reads
tasks.py, and eval.load_task_modules imports evaluate.py.
"""
