"""The manifest's HellaSwag deviations are counted from the shipped copy, and the report marks the task."""

import gzip
import importlib.util
import json
from importlib import resources

import lm_eval

from softpick_bench.report.directions import NOT_COMPARABLE


def _docs():
    path = resources.files("softpick_bench") / "data/tasks/hellaswag/validation.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f]


def _lm_eval_preprocess():
    spec = importlib.util.spec_from_file_location("hs_utils", f"{lm_eval.__path__[0]}/tasks/hellaswag/utils.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.preprocess


def test_manifest_counts_match_the_data():
    text = json.loads((resources.files("softpick_bench") / "data/tasks/manifest.json").read_text())["hellaswag"][
        "differences_from_hub"]
    docs = _docs()
    wikihow = [d for d in docs if d["ctx_a"].startswith("How to")]
    endings = [e for d in docs for e in d["endings"]]
    preprocess = _lm_eval_preprocess()
    queries_changed = sum(preprocess(d["activity_label"] + ": " + d["ctx"]) != d["activity_label"] + ": " + d["ctx"]
                          for d in docs)
    endings_changed = sum(any(preprocess(e) != e for e in d["endings"]) for d in docs)
    counts = {
        f"the {len(wikihow)} WikiHow documents": len(wikihow) == 6800,
        f"the other {len(docs) - len(wikihow)} are ActivityNet": True,
        f"0 of {len(endings)}": not any(e[:1].isspace() for e in endings),
        f"{sum('[' in d['ctx'] or any('[' in e for e in d['endings']) for d in docs)} documents still hold": True,
        f"{queries_changed} queries, {endings_changed} documents' endings": True,
        f"{sum(1 for d in docs if d['ctx_b'])} documents have a non-empty ctx_b": True,
        f"{sum('..' in d['ctx'] or any('..' in e for e in d['endings']) for d in wikihow)} of them show": True,
    }
    for phrase, holds in counts.items():
        assert holds and phrase in text, phrase
    assert "letter case only" not in text and "not comparable with published" in text


def test_report_marks_hellaswag_not_comparable():
    assert "not comparable with published HellaSwag numbers" in NOT_COMPARABLE["hellaswag"]


def test_hellaswag_tables_carry_the_note(tmp_path):
    from test_report import make_run

    from softpick_bench.report import write_report

    from softpick_bench.sweep.store import ResultStore

    make_run(tmp_path)
    store = ResultStore(tmp_path)
    for path in (tmp_path / "cells").glob("*.json"):
        r = json.loads(path.read_text())
        if r["task"]["name"] == "arc_easy":
            r["task"]["name"] = "hellaswag"
            r.pop("checksum", None)
            store.write(r["key"], r)  # through the store: a hand-edited record would be set aside
    text = (tmp_path / "report.md").read_text() if write_report(tmp_path, plots=False, n_resamples=50) else ""
    section = text[text.index("### syn · hellaswag · acc"):]
    assert section.split("|")[0].count("not comparable with published HellaSwag numbers") == 1
