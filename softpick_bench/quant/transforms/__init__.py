"""Transforms before methods: rotation and smoothing, run in spec order before the weight method."""

import importlib

TRANSFORM_MODULES = ("rotation", "smoothquant")


def load_transforms() -> None:
    for name in TRANSFORM_MODULES:
        importlib.import_module(f"softpick_bench.quant.transforms.{name}")
