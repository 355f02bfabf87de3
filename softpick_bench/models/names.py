"""Checkpoint naming rules the config validates against, importable without torch/transformers."""

import re

DTYPE_NAMES = ("float32", "bfloat16", "float16")  # models.checkpoint.DTYPES maps them to torch dtypes
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
