"""Training that retrains bit for bit: the settings, and the hashes that prove it.

On one GPU kind, with the same software, a recipe and seed give the same batches
(train/data.py), the same initial weights (models/tiny.py) and, under these settings, the
same arithmetic in every step: torch's deterministic algorithms (an op without one raises
instead of running a nondeterministic kernel), a fixed cuBLAS workspace, and attention
through the project's Triton kernel, whose backward uses no atomics (train/attention.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

import torch

CUBLAS_WORKSPACE = ":4096:8"  # cuBLAS's documented setting for reproducible results
WEIGHTS_FILE = "model.safetensors"


@contextlib.contextmanager
def deterministic(device: str):
    """Yield the settings in force (for the training record); restore torch's state after."""
    # cuBLAS reads this when its handle is created: before any CUDA matrix product of the run
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield {
            "torch_deterministic_algorithms": True,
            "cudnn_deterministic": True,
            "cudnn_benchmark": False,
            "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"] if device == "cuda" else None,
            "torch": torch.__version__,
            "cuda": torch.version.cuda if device == "cuda" else None,
        }
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def weights_sha256(folder: Path) -> str:
    """sha256 of a checkpoint's weights file: equal hashes mean bit-identical weights."""
    h = hashlib.sha256()
    with (Path(folder) / WEIGHTS_FILE).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
