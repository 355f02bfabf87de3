"""Calibration windows: seeded, recorded, never an evaluation set."""

from pathlib import Path

import pytest
import torch

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.models.checkpoint import load_tokenizer
from softpick_bench.quant.base import QuantContext
from softpick_bench.quant.calibration import calibration_windows, load_calibration

TOKENIZER = Path(__file__).resolve().parents[1] / "softpick_bench" / "assets" / "tokenizer"


def test_windows_are_seeded_and_recorded():
    tok = load_tokenizer(TOKENIZER)
    a, info = calibration_windows(tok, 4, 64, seed=0)
    b, _ = calibration_windows(tok, 4, 64, seed=0)
    c, _ = calibration_windows(tok, 4, 64, seed=1)
    assert a.shape == (4, 64) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert info["source"] == "gutenberg" and info["seed"] == 0 and info["source_tokens"] > 100_000
    assert info["sha256"] == "33678a66da7b769417a7f5880b67e9b489900500a056b142b75a209c5ca62b90"
    ctx = QuantContext(tokenizer=tok, seed=5)
    ids, _ = load_calibration(ctx, "gptq", 2, 32)
    assert ids.shape == (2, 32) and ctx.info["calibration"]["gptq"]["seed"] == 5


def test_evaluation_sets_are_refused(tmp_path):
    path = tmp_path / "wikitext-2" / "wiki.test.raw"
    path.parent.mkdir()
    path.write_text("text " * 100)
    with pytest.raises(UnsupportedQuantError, match="evaluation set"):
        calibration_windows(object(), 2, 8, 0, source=str(path))
