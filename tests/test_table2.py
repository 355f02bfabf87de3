"""Table 2 and the recipe-grid table, rendered from the files a training run writes."""

import json

from softpick_bench.train.table2 import grid_table, render


def _metrics(sink: float, kurtosis: float) -> dict:
    values = {"sink_rate_0.2": sink, "sink_rate_0.3": sink / 2, "kurtosis": kurtosis, "hidden_min": -1.0,
              "hidden_max": 1.0, "attn_sparsity": 0.5, "dead_heads": 0.0}
    return {"values": values, "details": {"n_samples": 100, "seq_len": 64}}


def _run(folder, seed: int, sinks: tuple[float, float], kurtosis: tuple[float, float]) -> None:
    folder.mkdir(parents=True)
    cfg = {"name": "demo", "rows": "bos_first", "lr": 1e-3, "weight_decay": 0.5, "seed": seed, "batch_size": 64,
           "seq_len": 512, "model": {"hidden": 512, "layers": 8, "heads": 8}}
    sides = {kind: {"final_train_loss": 3.2, "final_val_loss": val, "train_backend": "x", "tok_per_s": 1.0,
                    "params": 34e6} for kind, val in (("softmax", 3.54), ("softpick", 3.55))}
    summary = {"config": cfg, "sides": sides, "steps_done": 3000, "tokens_seen": 98e6, "truncated": False,
               "device": "cuda", "gpu": "H100"}
    (folder / "summary.json").write_text(json.dumps(summary))
    for name, scale in (("analysis.json", 1.0), ("analysis_nobos.json", 0.01)):
        (folder / name).write_text(json.dumps({kind: _metrics(s * scale, k) for kind, s, k in
                                               zip(("softmax", "softpick"), sinks, kurtosis)}))
    (folder / "train_log.jsonl").write_text("")


def test_grid_table_has_one_row_per_run_with_ratio(tmp_path):
    _run(tmp_path / "a-run", 1234, (0.8, 0.02), (2000.0, 50.0))
    _run(tmp_path / "b-run", 4321, (0.6, 0.04), (900.0, 90.0))
    (tmp_path / "not-a-run").mkdir()
    lines = grid_table(tmp_path).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| a-run | bos_first | 0.001 | 0.5 | 1234 | 3000 |")
    assert "| 40.00% | 1.00% | 0.40% | 0.01% | 2000.0 | 50.0 | 40.0 |" in lines[2]
    assert lines[3].endswith("| 900.0 | 90.0 | 10.0 |")


def test_table2_rows_are_named_after_their_folders(tmp_path):
    _run(tmp_path / "demo-seed1234", 1234, (0.8, 0.02), (2000.0, 50.0))
    text = render([tmp_path / "demo-seed1234"])
    assert "| demo-seed1234 (34.0M) | softpick | 3.2000 | 3.5500 | 2.00% | 1.00% |" in text
    assert "seed 1234" in text and "Validation-loss gap softpick - softmax: +0.0100" in text
