"""Test set-up shared by every test module.

Without CUDA, Triton kernels run in the interpreter; TRITON_INTERPRET must be set
before triton is first imported, which is why it is set here, at collection time.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.use_deterministic_algorithms(False)
