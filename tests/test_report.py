"""The report from synthetic sweeps with known effects: headline first with relative degradation and
significance, generated sentences, replicates (t intervals over seeds), coverage, directions, CSV
types, a self-contained HTML page, and older records without the new fields."""

import gzip
import json
import math
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from softpick_bench.eval.items import aggregate, metric_items, payload
from softpick_bench.quant.spec import QuantSpec
from softpick_bench.report import NoResultsError, write_report
from softpick_bench.report import stats
from softpick_bench.sweep.store import ResultStore

BITS = (2, 4, 8)
N_WINDOWS, N_DOCS, TOKENS = 24, 120, 255.0
# per-token NLL added by quantization, per kind and bits (softpick loses less at 2 and 4 bits)
NLL_SHIFT = {"softmax": {2: 1.0, 4: 0.2, 8: 0.0}, "softpick": {2: 0.5, 4: 0.05, 8: 0.0}}
# probability that a correct document stays correct
KEEP = {"softmax": {2: 0.5, 4: 0.9, 8: 1.0}, "softpick": {2: 0.8, 4: 0.95, 8: 1.0}}


def _record(pair, kind, spec, task, metrics, key, replicate, has_items, task_options):
    return {
        "key": key, "sweep": "synthetic", "pair": pair, "kind": kind, "replicate": replicate,
        "checkpoint": f"/abs/path/{kind}{replicate}", "checkpoint_given": f"../ckpt/{kind}{replicate}",
        "fingerprint": f"fp{kind}{replicate}", "quant": spec.to_dict(), "quant_label": spec.label(),
        "task": {"name": task, "options": task_options}, "versions": {}, "dtype": "float32", "device": "cpu",
        "seed": 0, "status": "ok", "metrics": metrics, "has_items": has_items,
        "quant_report": None if spec.is_baseline else {
            "method": spec.method, "layers_quantized": 14, "layers_total": 14, "params_quantized": 1000,
            "mean_rel_weight_error": 0.1 / spec.bits, "effective_bits": spec.bits + 0.5, "details": {}},
        "timing": {"quantize_s": 0.1, "evaluate_s": 0.2},
    }


def make_run(out, replicates=1, items=True, rng_seed=0, pair="syn"):
    """A result folder: wikitext2 (windows), arc_easy (documents), analysis; rtn at BITS; known effects."""
    rng = np.random.default_rng(rng_seed)
    store = ResultStore(out)
    specs = [QuantSpec()] + [QuantSpec(method="rtn", bits=b, group_size=32) for b in BITS]
    n = 0
    for rep in range(replicates):
        nll = rng.uniform(4.0, 6.0, N_WINDOWS)
        correct = (rng.random(N_DOCS) < 0.6).astype(float)
        for kind in ("softmax", "softpick"):
            for spec in specs:
                shift = 0.0 if spec.is_baseline else NLL_SHIFT[kind][spec.bits] + 0.05 * rep
                per_tok = nll + shift + (rng.normal(0, 0.01, N_WINDOWS) if shift else 0)  # 8 bits: unchanged
                ppl_items = metric_items("weighted_perplexity", list(range(N_WINDOWS)),
                                         [[-x * TOKENS, TOKENS] for x in per_tok])
                keep = 1.0 if spec.is_baseline else KEEP[kind][spec.bits]
                acc = correct * (rng.random(N_DOCS) < keep)
                acc_items = metric_items("mean", [f"d{i}" for i in range(N_DOCS)], acc)
                ppl = aggregate("weighted_perplexity", ppl_items["values"])
                cells = [
                    ("wikitext2", [{"metric": "ppl_gptq", "value": ppl, "stderr": None, "higher_is_better": False,
                                    "details": {"windows": N_WINDOWS, "seq_len": 256, "predicted_tokens":
                                                int(N_WINDOWS * TOKENS), "dataset_tokens": 377158}}],
                     payload("wikitext2", {"ppl_gptq": ppl_items}), {"seq_len": 256, "max_windows": N_WINDOWS}),
                    ("arc_easy", [{"metric": "acc", "value": float(acc.mean()), "stderr": 0.04,
                                   "higher_is_better": True,
                                   "details": {"documents": N_DOCS, "documents_total": 2376, "limit": N_DOCS}}],
                     payload("arc_easy", {"acc": acc_items}), {"limit": N_DOCS}),
                    ("analysis", [{"metric": m, "value": v, "stderr": None, "higher_is_better": None,
                                   "details": {"n_samples": 16, "seq_len": 64}}
                                  for m, v in (("sink_rate_0.3", 0.4 if kind == "softmax" else 0.01),
                                               ("kurtosis", 2000.0 if kind == "softmax" else 50.0),
                                               ("dead_heads", 0.0))], None, {"n_samples": 16}),
                ]
                for task, metrics, item_payload, opts in cells:
                    key = f"k{n:04d}"
                    n += 1
                    has = items and item_payload is not None
                    if has:
                        store.write_items(key, item_payload)
                    store.write(key, _record(pair, kind, spec, task, metrics, key, rep, has, opts))
    return store


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    make_run(out)
    return out, write_report(out, n_resamples=400)


def test_report_md_opens_with_the_headline(one_seed):
    out, rep = one_seed
    text = (out / "report.md").read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections[0].startswith("## Headline")
    first_table = text.index("### ")
    assert text[first_table:].startswith("### syn · wikitext2 · ppl_gptq (lower is better)")
    assert text.index("arc_easy · acc") < text.index("## Analysis metrics")
    assert "Covers: 24 of 1,473 windows, 6,120 of 377,158 tokens." in text
    assert "Covers: 120 of 2,376 documents (limit 120)." in text


def _headline_rows(out):
    df = pd.read_csv(out / "results.csv")
    return df


def test_headline_numbers_match_the_records(one_seed):
    out, rep = one_seed
    text = (out / "report.md").read_text()
    df = pd.read_csv(out / "results.csv")
    w = df[(df.metric == "ppl_gptq") & (df.replicate == 0)].set_index(["kind", "quant"])["value"]
    rel_sm = (w["softmax", "rtn-w2-g32"] - w["softmax", "none"]) / w["softmax", "none"]
    rel_sp = (w["softpick", "rtn-w2-g32"] - w["softpick", "none"]) / w["softpick", "none"]
    row = next(line for line in text.splitlines() if line.startswith("| rtn-w2-g32 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3].startswith(f"{100 * rel_sm:+.2f}%") and cells[4].startswith(f"{100 * rel_sp:+.2f}%")
    assert cells[5] == f"{100 * (rel_sp - rel_sm):+.2f}%"
    assert cells[8] == "softpick less"  # a large, consistent effect on every window
    assert math.isclose(rel_sm, math.exp(1.0) - 1, rel_tol=0.02)


def test_generated_sentences_follow_the_numbers(one_seed):
    out, rep = one_seed
    ppl = rep.headline["syn · wikitext2 · ppl_gptq (lower is better)"]
    assert len(ppl) == 1 and ppl[0].startswith("**rtn-g32**: softpick degrades less at 2 bits")
    assert "4 bits" in ppl[0].split(";")[0]
    assert "no difference at 0.01% at 8 bits" in ppl[0]  # 8 bits: both models unchanged, interval [0, 0]
    acc = rep.headline["syn · arc_easy · acc (higher is better)"][0]
    assert "softpick degrades less at 2 bits" in acc
    assert "no difference at 0.01% at 8 bits (+0.00%)" in acc  # keep = 1 at 8 bits: identical


def test_mcnemar_and_bootstrap_values_in_the_table_are_the_statistics(one_seed):
    out, rep = one_seed
    store = ResultStore(out)
    df = pd.read_csv(out / "results.csv")
    keys = df[df.metric == "acc"].set_index(["kind", "quant"])["key"]
    items = {k: store.read_items(keys[k])["metrics"]["acc"] for k in keys.index}
    m = stats.mcnemar(items["softmax", "none"], items["softmax", "rtn-w2-g32"])
    text = (out / "report.md").read_text()
    acc_part = text[text.index("### syn · arc_easy · acc"):]
    row = next(line for line in acc_part.splitlines() if line.startswith("| rtn-w2-g32 |"))
    from softpick_bench.report.fmt import p_value
    assert f"(p {p_value(m.p_value)})" in row
    b = stats.paired_bootstrap({"softmax_base": items["softmax", "none"], "softmax_quant": items["softmax", "rtn-w2-g32"],
                                "softpick_base": items["softpick", "none"],
                                "softpick_quant": items["softpick", "rtn-w2-g32"]}, True, n_resamples=400)
    assert f"[{100 * b.difference.low:+.2f}%, {100 * b.difference.high:+.2f}%]" in row
    assert "exact McNemar" in acc_part.split("|")[0] and "paired bootstrap (400 resamples, seed 0)" in acc_part


def test_analysis_directions_and_csv_types(one_seed):
    out, rep = one_seed
    text = (out / "report.md").read_text()
    assert "sink_rate_0.3 (lower is better: fewer attention sinks" in text
    assert "dead_heads (no better or worse:" in text
    df = pd.read_csv(out / "results.csv")
    for col in ("bits", "group_size", "layers_quantized", "replicate", "n_items"):
        assert all(float(v).is_integer() for v in df[col].dropna())
    raw = pd.read_csv(out / "results.csv", dtype=str)  # the text as written
    for col in ("bits", "group_size", "layers_quantized", "layers_total", "replicate", "n_items", "seed"):
        assert raw[col].notna().any() and not raw[col].dropna().str.contains(r"\.").any(), col
    assert df.higher_is_better.notna().sum() == len(df[~df.metric.isin(["dead_heads"])])
    assert set(df[df.metric == "sink_rate_0.3"].higher_is_better) == {False}
    assert set(df.direction) == {"lower", "higher", "neither"}
    assert set(df.checkpoint) == {"../ckpt/softmax0", "../ckpt/softpick0"}


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.srcs, self.links, self.tables, self.text = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img":
            self.srcs.append(a.get("src", ""))
        if tag in ("link", "script") or (tag == "a" and a.get("href")):
            self.links.append((tag, a))
        if tag == "table":
            self.tables.append(a.get("class", ""))

    def handle_data(self, data):
        self.text.append(data)


def test_report_html_is_one_self_contained_page(one_seed):
    out, rep = one_seed
    page = _Page()
    page.feed((out / "report.html").read_text())
    assert page.tables and page.tables[0] == "headline"
    assert page.srcs and all(s.startswith("data:image/png;base64,") for s in page.srcs)
    assert len(page.srcs) == len(list((out / "plots").glob("*.png")))
    assert page.links == []  # no stylesheet, script or link to anything outside the page
    text = "".join(page.text)
    assert "Headline" in text and "softpick less" in text
    assert text.index("Headline") < text.index("Analysis metrics")


@pytest.mark.parametrize("replicates", [2, 3])
def test_replicates_give_t_intervals_over_seeds(tmp_path, replicates):
    make_run(tmp_path, replicates=replicates)
    rep = write_report(tmp_path, plots=False, n_resamples=200)
    df = pd.read_csv(tmp_path / "results.csv")
    assert sorted(df.replicate.unique()) == list(range(replicates))
    w = df[df.metric == "ppl_gptq"]
    diffs = []
    for r in range(replicates):
        v = w[w.replicate == r].set_index(["kind", "quant"])["value"]
        rel = {k: (v[k, "rtn-w2-g32"] - v[k, "none"]) / v[k, "none"] for k in ("softmax", "softpick")}
        diffs.append(rel["softpick"] - rel["softmax"])
    iv = stats.t_interval(diffs)
    text = (tmp_path / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| rtn-w2-g32 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[5] == f"{100 * np.mean(diffs):+.2f}%"
    assert cells[6] == f"[{100 * iv.low:+.2f}%, {100 * iv.high:+.2f}%]"
    assert len(cells[7].split(", ")) == replicates  # each seed's own paired test
    dof = f"({replicates - 1} degree{'s' if replicates > 2 else ''} of freedom)"
    assert f"{replicates} training seeds" in text and dof in text


def test_older_records_without_new_fields_and_without_items(tmp_path):
    make_run(tmp_path, items=False)
    store = ResultStore(tmp_path)
    for path in (tmp_path / "cells").glob("*.json"):
        r = json.loads(path.read_text())
        for field in ("replicate", "checkpoint_given", "has_items", "checksum"):
            r.pop(field, None)
        for m in r["metrics"]:
            m["details"] = {}
        store.write(r["key"], r)  # through the store, so the record's checksum is valid
    rep = write_report(tmp_path, plots=True)
    text = (tmp_path / "report.md").read_text()
    assert "untested" in text and "no significance test" in text
    assert "Covers: not recorded (older records)." in text
    df = pd.read_csv(tmp_path / "results.csv")
    assert set(df.replicate) == {0} and df.checkpoint.str.startswith("/abs/").all()
    assert (tmp_path / "report.html").is_file()
    assert rep.headline  # sentences say the direction without a test
    assert any("untested (no per-item results)" in s for s in next(iter(rep.headline.values())))


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(NoResultsError, match="no sweep results here"):
        write_report(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()
    (tmp_path / "cells").mkdir()
    with pytest.raises(NoResultsError, match="no finished cells"):
        write_report(tmp_path)


def test_items_file_round_trip_is_gzip_json(tmp_path):
    store = make_run(tmp_path / "r")
    path = next((tmp_path / "r" / "cells").glob("*.items.json.gz"))
    assert json.loads(gzip.decompress(path.read_bytes()))["format"] == 1
    assert store.read_items(path.name.split(".")[0]) is not None


def test_heatmap_skips_metrics_without_a_difference(tmp_path):
    """A baseline of 0 (accuracy of a random model) leaves no relative difference: no plot, no crash."""
    from softpick_bench.report.plots import plot_heatmap

    summary = pd.DataFrame(
        {"pair": ["p", "p"], "task": ["arc_easy", "arc_easy"], "metric": ["acc", "acc"],
         "family": ["rtn-g32", "rtn-g32"], "axis_bits": [2, 4], "diff": [float("nan"), float("nan")]}
    )  # fmt: skip
    assert plot_heatmap(summary, tmp_path) == []
    summary.loc[0, "diff"] = 0.01
    assert len(plot_heatmap(summary, tmp_path)) == 1


@pytest.mark.parametrize("across, per_seed, expected", [
    ("less", ["less", "less"], "less"),
    ("less", ["less", "noise"], "noise"),  # two seeds that agree by chance: no call without each seed's test
    ("more", ["noise", "noise"], "noise"),
    ("noise", ["less", "less"], "seeds-less"),  # every seed agrees, the spread leaves the mean unbounded
    ("noise", ["more", "more", "more"], "seeds-more"),
    ("noise", ["less", "more"], "noise"),
    ("more", ["untested", "untested"], "more"),  # no per-item results: the interval across seeds alone
])
def test_verdict_over_seeds_needs_each_seeds_own_test(across, per_seed, expected):
    from softpick_bench.report.compare import seeds_verdict

    assert seeds_verdict(across, per_seed) == expected


def test_a_difference_below_the_printed_resolution_is_no_finding():
    """A rotation that only changes float rounding gives a tiny interval off 0: not 'softpick more'."""
    from softpick_bench.report.compare import seeds_verdict, verdict

    assert verdict(1e-7, 3e-7) == "same" and verdict(-4e-5, -1e-5) == "same"
    assert verdict(1e-7, 2e-4) == "more" and verdict(-2e-4, -1e-7) == "less"
    assert seeds_verdict("same", ["more", "more"]) == "same"
