"""The CI regression check flags changed and missing cells, and only those."""

import pandas as pd

from softpick_bench.report.regress import compare, failures


def _df(values):
    return pd.DataFrame(
        [{"pair": "p", "kind": k, "quant": q, "task": "wikitext2", "metric": "ppl_gptq", "value": v}
         for (k, q), v in values.items()]
    )


def test_within_tolerance_passes_and_new_cells_do_not_fail():
    base = _df({("softmax", "none"): 100.0, ("softpick", "none"): 101.0})
    now = _df({("softmax", "none"): 100.05, ("softpick", "none"): 101.0, ("softpick", "rtn-w4"): 120.0})
    findings = compare(now, base, rtol=1e-3)
    assert failures(findings) == []
    assert [f.verdict for f in findings] == ["new"]


def test_changed_and_missing_cells_fail():
    base = _df({("softmax", "none"): 100.0, ("softpick", "none"): 101.0})
    now = _df({("softmax", "none"): 102.0})
    verdicts = sorted(f.verdict for f in failures(compare(now, base, rtol=1e-3)))
    assert verdicts == ["changed", "missing"]
