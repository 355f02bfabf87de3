"""Compiled-once templates render every string exactly as lm-eval's own apply_template does."""

from __future__ import annotations

import pytest

pytest.importorskip("lm_eval")

from lm_eval import utils

from softpick_bench.eval.harness.templates import compiled_templates

DOCS = [
    {"question": "Which gas?", "choices": {"text": ["O2", "N2"], "label": ["A", "B"]}, "answerKey": "B"},
    {"question": "  spaced  \n", "choices": {"text": ["x", "y"], "label": ["A", "B"]}, "answerKey": "A"},
]
TEMPLATES = [
    "Question: {{question}}\nAnswer:",
    "{{choices.label.index(answerKey)}}",
    "{{choices.text}}",
    "{{question | regex_replace(' +', ' ')}}\n",  # lm-eval's own filter, trailing newline kept
]


def test_same_strings_and_each_template_compiled_once():
    expected = [[utils.apply_template(t, d) for d in DOCS] for t in TEMPLATES]
    original = utils.apply_template
    with compiled_templates() as compile_template:
        got = [[utils.apply_template(t, d) for d in DOCS] for t in TEMPLATES * 3]
        info = compile_template.cache_info()
    assert got == expected * 3
    assert (info.misses, info.hits) == (len(TEMPLATES), len(TEMPLATES) * (len(DOCS) * 3 - 1))
    assert utils.apply_template is original  # restored


def test_errors_are_lm_evals():
    with compiled_templates():
        with pytest.raises(Exception) as inside:
            utils.apply_template("{{missing}}", DOCS[0])
    with pytest.raises(type(inside.value)):
        utils.apply_template("{{missing}}", DOCS[0])
