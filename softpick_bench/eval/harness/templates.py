"""lm-eval's prompt templates compiled once per template, not once per document.

lm-eval 0.4's `utils.apply_template(template, doc)` compiles the Jinja template from its source
(`env.from_string`) on every call, and a multiple-choice task's `process_results` calls it twice
per document (`doc_to_target`, `doc_to_choice`): about 1.2 ms a document on a 2-core CPU, 2.9 s of
arc_easy's 3.1 s of metrics once scoring is fast (cProfile, 2026-12-02). Inside
`compiled_templates()` each source string is compiled once, by lm-eval's own environment, and
rendered as before, so every string (and every number computed from one) is unchanged; a compiled
Jinja template keeps no state between renders. Outside the block lm-eval is untouched.
"""

from __future__ import annotations

import contextlib
import functools


@contextlib.contextmanager
def compiled_templates():
    """Within the block, lm-eval's `apply_template` reuses compiled templates (lm-eval's task code
    looks the name up in its utils module at each call)."""
    from lm_eval import utils

    original = utils.apply_template
    compile_template = functools.lru_cache(maxsize=1024)(utils.env.from_string)

    def apply_template(template: str, doc: dict) -> str:
        return compile_template(template).render(**doc)

    utils.apply_template = apply_template
    try:
        yield compile_template
    finally:
        utils.apply_template = original
