"""Run a decoder model one block at a time: capture the first block's inputs, then step block by block.

Used by calibration-based quantizers (GPTQ): each block sees inputs produced by the
blocks before it as they are *after* quantization. Every block runs its own forward,
so attention goes through the model's own kind (config._attn_implementation) and
softpick_bench.kernels.dispatch, exactly as in evaluation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.kernels import dispatch


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass after the first block's inputs."""


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The dotted name and the list of decoder blocks of a Llama-style model."""
    for name, module in model.named_modules():
        if name.endswith("layers") and isinstance(module, nn.ModuleList) and len(module) > 0:
            return name, module
    raise UnsupportedQuantError(
        f"{type(model).__name__} has no decoder-layer list (*.layers) to quantize block by block"
    )


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, first_block: nn.Module, ids: torch.Tensor, batch_size: int
) -> list[tuple[torch.Tensor, dict]]:
    """(hidden_states, kwargs) entering the first block, one pair per batch of `ids` rows."""
    captured: list[tuple[torch.Tensor, dict]] = []

    def hook(_module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.append((hidden, {k: v for k, v in kwargs.items() if k != "hidden_states"}))
        raise _Captured

    handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    device = next(model.parameters()).device
    try:
        for start in range(0, ids.shape[0], batch_size):
            try:
                model(input_ids=ids[start : start + batch_size].to(device), use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
    return captured


@torch.no_grad()
def run_block(block: nn.Module, inputs: list[tuple[torch.Tensor, dict]]) -> list[tuple[torch.Tensor, dict]]:
    """The block's outputs for every batch, paired with the same kwargs (they are the next block's inputs)."""
    out = []
    for hidden, kwargs in inputs:
        result = block(hidden, **kwargs)
        out.append((result[0] if isinstance(result, tuple) else result, kwargs))
    return out


@contextmanager
def record_attention_kinds() -> Iterator[Counter]:
    """Count the attention kinds that pass through kernels.dispatch while the context is open.

    Proof for the report that calibration ran the model's own attention (e.g. softpick).
    """
    seen: Counter = Counter()
    original = dispatch.attention_forward

    def counting(*args, **kwargs):
        seen[kwargs.get("kind", args[3] if len(args) > 3 else "?")] += 1
        return original(*args, **kwargs)

    dispatch.attention_forward = counting
    try:
        yield seen
    finally:
        dispatch.attention_forward = original
