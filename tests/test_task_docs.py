"""Our lm-eval tasks produce the documents, prompts and choices of lm-eval's official definitions.

The expected values are written out by hand: the first documents of each dataset (hub
order) put through the official task YAML's templates as lm-eval documents them. Long
prompts are pinned by their start, end and length.
"""

from __future__ import annotations

import pytest

pytest.importorskip("lm_eval")

from lm_eval.tasks._yaml_loader import load_yaml

from softpick_bench.eval.harness.tasks import (
    HARNESS_TASKS,
    lm_eval_tasks_dir,
    load_task,
    materialized_tasks_dir,
)


class Long:
    """A long string pinned by its start, its end and its length."""

    def __init__(self, head: str, tail: str, length: int):
        self.head, self.tail, self.length = head, tail, length

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, str)
            and other.startswith(self.head)
            and other.endswith(self.tail)
            and len(other) == self.length
        )

    def __repr__(self) -> str:
        return f"Long({self.head!r} ... {self.tail!r}, {self.length})"


# task -> [(prompt, choices or None, target)] for its first documents
EXPECTED = {
    "arc_easy": [
        (
            "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:",
            [
                "Sunlight is the source of energy for nearly all ecosystems.",
                "Most ecosystems are found on land instead of in water.",
                "Carbon dioxide is more available than other gases.",
                "The producers in all ecosystems are plants.",
            ],
            0,
        ),
        (
            (
                "Question: Which piece of safety equipment is used to keep mold spores from entering the respiratory"
                " system?\nAnswer:"
            ),
            ["safety goggles", "breathing mask", "rubber gloves", "lead apron"],
            1,
        ),
    ],
    "arc_challenge": [
        (
            (
                "Question: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most"
                " likely effect of this increase in rotation?\nAnswer:"
            ),
            [
                "Planetary density will decrease.",
                "Planetary years will become longer.",
                "Planetary days will become shorter.",
                "Planetary gravity will become stronger.",
            ],
            2,
        ),
    ],
    "piqa": [
        (
            "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:",
            [
                (
                    "Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, you will"
                    " also need to supply it with a water bottle and a food dish."
                ),
                (
                    "Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans material, you"
                    " will also need to supply it with a water bottle and a food dish."
                ),
            ],
            0,
        ),
        ("Question: dresser\nAnswer:", ["replace drawer with bobby pin ", "finish, woodgrain with  bobby pin "], 1),
    ],
    "sciq": [
        (
            Long(
                "Oxidants and Reductants Compounds that are capable of accepting electrons, such as O 2 or F2,",
                "saylor. org/books.\nQuestion: Compounds that are capable of accepting electrons, such as o 2 or f2,"
                " are called what?\nAnswer:",
                711,
            ),
            ["antioxidants", "Oxygen", "residues", "oxidants"],
            3,
        ),
    ],
    "hellaswag": [
        (
            "Roof shingle removal: A man is sitting on a roof. He",
            [
                "is using wrap to wrap a pair of skis.",
                "is ripping level tiles off.",
                "is holding a rubik's cube.",
                "starts pulling up roofing on a roof.",
            ],
            3,
        ),
        (
            "Clean and jerk: A lady walks to a barbell. She bends down and grabs the pole. The lady",
            [
                "swings and lands in her arms.",
                "pulls the barbell forward.",
                "pulls a rope attached to the barbell.",
                "stands and lifts the weight over her head.",
            ],
            3,
        ),
    ],
    # winogrande is "partial" scoring: the prompt is the gold choice's index, the choices are
    # the sentence up to the blank with each option, the target is the rest of the sentence.
    "winogrande": [
        (
            1,
            [
                "Sarah was a much better surgeon than Maria so Sarah",
                "Sarah was a much better surgeon than Maria so Maria",
            ],
            "always got the easier cases.",
        ),
        (
            0,
            [
                "Sarah was a much better surgeon than Maria so Sarah",
                "Sarah was a much better surgeon than Maria so Maria",
            ],
            "always got the harder cases.",
        ),
    ],
    "boolq": [
        (
            Long(
                "Ethanol fuel -- All biomass goes through at least some of these steps:",
                "uses much less petroleum than producing gasoline.\nQuestion: does ethanol take more energy make that"
                " produces?\nAnswer:",
                1452,
            ),
            ["no", "yes"],
            0,
        ),
    ],
    "openbookqa": [
        (
            (
                "A person wants to start saving money so that they can afford a nice vacation at the end of the year. After"
                " looking over their budget and expenses, they decide the best way to save money is to"
            ),
            [
                "make more phone calls",
                "quit eating lunch out",
                "buy less with monopoly money",
                "have lunch with friends",
            ],
            1,
        ),
        ("There is most likely going to be fog around:", ["a marsh", "a tundra", "the plains", "a desert"], 0),
    ],
    "lambada_openai": [
        (
            Long(
                "In my palm is a clear stone, and inside it is a small ivory statuette. A guardian angel.\n\n",
                "his mouth curved in a confident grin, I don't care about",
                339,
            ),
            None,
            " signs",
        ),
        (
            Long("Give me a minute to change and I'll meet you at the docks.", '"I can make it there on my own,', 241),
            None,
            " Shane",
        ),
    ],
    # rolling loglikelihood over the detokenized page; @-@, " , " and " \n" undone by lm-eval's detokenizer
    "wikitext_word": [
        (
            "",
            None,
            Long(
                " = Robert Boulter =\n\nRobert Boulter is an English film, television and theatre actor. He had a"
                " guest-starring role on the television series The Bill in 2000.",
                "",
                5419,
            ),
        ),
    ],
}


@pytest.mark.parametrize("name", sorted(HARNESS_TASKS))
def test_first_documents_match_official_definition(name):
    task = load_task(name, source="local")
    docs = list(task.eval_docs)
    for i, (prompt, choices, target) in enumerate(EXPECTED[name]):
        doc = docs[i]
        assert task.doc_to_text(doc) == prompt, (name, i)
        if choices is not None:
            assert task.OUTPUT_TYPE == "multiple_choice"
            assert task.doc_to_choice(doc) == choices, (name, i)
        assert task.doc_to_target(doc) == target, (name, i)


def test_every_shipped_task_has_expectations_and_full_document_counts():
    assert set(EXPECTED) == set(HARNESS_TASKS)
    counts = {"arc_easy": 2376, "lambada_openai": 5153, "piqa": 1838, "sciq": 1000, "wikitext_word": 62}
    for name, n in counts.items():
        assert len(list(load_task(name).eval_docs)) == n, name


# Only where the documents come from may differ from lm-eval's own YAML.
DATA_KEYS = {"dataset_path", "dataset_name", "dataset_kwargs", "training_split", "validation_split"}


@pytest.mark.parametrize("name", sorted(HARNESS_TASKS))
def test_yaml_overrides_only_the_data_source(name):
    ours = load_yaml(materialized_tasks_dir() / f"{HARNESS_TASKS[name].lm_eval_name}.yaml", resolve_func=False)
    include = (materialized_tasks_dir() / f"{HARNESS_TASKS[name].lm_eval_name}.yaml").read_text()
    official_path = include.split('include: "', 1)[1].split('"', 1)[0]
    assert official_path.startswith(str(lm_eval_tasks_dir()))
    official = load_yaml(official_path, resolve_func=False)
    for key in set(ours) | set(official):
        if key not in DATA_KEYS:
            assert ours.get(key) == official.get(key), (name, key)
    assert ours["dataset_path"] == "json"
    assert ours.get("test_split") or ours.get("validation_split")
