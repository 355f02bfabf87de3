"""GPTQ for whole models, implemented in the project, block by block.

Order of work (the "true sequential" variant of the paper's reference code):
1. calibration windows (quant/calibration.py) run through the model up to the first
   decoder block; its inputs (hidden states and kwargs: rotary embeddings, boolean mask)
   are kept per batch;
2. for each block, its linear layers are quantized in four rounds, in the order the data
   flows: q/k/v, then o, then gate/up, then down. Before each round the block is run on
   its current inputs with the layers of the earlier rounds already quantized, and the
   Hessians of this round's layers are collected from their inputs. Rounds cost one block
   forward each, but every layer is fitted to the inputs it will really see;
3. the block's outputs with all its layers quantized become the next block's inputs.
Each forward pass runs the model's own attention kind through kernels.dispatch (a softpick
model is calibrated through softpick attention); the report counts the kinds that ran.

Layers outside the blocks: lm_head (when not skipped) gets GPTQ with the final-norm
output as its input; embeddings (no input Hessian) fall back to RTN, recorded in the report.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.quant.base import (
    QuantContext,
    WeightQuantizer,
    iter_targets,
    peak_memory,
    register,
    relative_error,
    skipped_names,
)
from softpick_bench.quant.blockwise import capture_block_inputs, decoder_layers, record_attention_kinds, run_block
from softpick_bench.quant.calibration import DEFAULT_SOURCE, load_calibration
from softpick_bench.quant.gptq_solver import gptq_quantize
from softpick_bench.quant.rtn import effective_bits, fake_quantize
from softpick_bench.quant.spec import QuantReport, QuantSpec

# rounds inside a block, in data-flow order; linear layers not named here get a round each, last
ROUNDS = (("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj"), ("down_proj",))
CALIBRATION_BATCH = 8  # sequences per forward pass (memory only; results do not depend on it beyond rounding)


def _rounds(names: list[str]) -> list[list[str]]:
    rounds, placed = [], set()
    for suffixes in ROUNDS:
        chosen = [n for n in names if n.split(".")[-1] in suffixes]
        if chosen:
            rounds.append(chosen)
            placed.update(chosen)
    rounds += [[n] for n in names if n not in placed]
    return rounds


class _HessianCollector:
    """Accumulates X^T X of a linear layer's inputs (float32) over every token seen."""

    def __init__(self, module: nn.Linear):
        n = module.in_features
        self.sum = torch.zeros(n, n, dtype=torch.float32, device=module.weight.device)
        self.count = 0
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, _module, args):
        x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
        self.sum.addmm_(x.T, x)
        self.count += x.shape[0]

    def hessian(self) -> torch.Tensor:
        self.handle.remove()
        return 2.0 * self.sum / max(self.count, 1)


@register
class GPTQ(WeightQuantizer):
    name = "gptq"
    bits = frozenset(range(2, 9))
    needs_calibration = True
    options = {
        "damp": "dampening, as a fraction of the mean Hessian diagonal added to it (default 0.01)",
        "act_order": "quantize columns by decreasing Hessian diagonal, with static groups (default false)",
        "block_size": "columns per lazy-update block (default 128)",
        "nsamples": "calibration sequences (default 128)",
        "seq_len": "calibration sequence length (default 2048, capped at the model's max positions)",
        "calibration": f"calibration text: {DEFAULT_SOURCE!r} (shipped slice) or a .txt/.txt.gz path",
    }

    def check(self, spec: QuantSpec, device: str) -> None:
        super().check(spec, device)
        damp = spec.option("damp", 0.01)
        if not isinstance(damp, (int, float)) or not 0 <= damp < 1:
            raise UnsupportedQuantError(f"gptq option damp must be a number in [0, 1), got {damp!r}")
        for key in ("nsamples", "seq_len", "block_size"):
            value = spec.option(key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UnsupportedQuantError(f"gptq option {key} must be a positive integer, got {value!r}")

    def apply(self, model: nn.Module, spec: QuantSpec, ctx: QuantContext) -> QuantReport:
        start = time.perf_counter()
        damp = float(spec.option("damp", 0.01))
        act_order = bool(spec.option("act_order", False))
        block_size = int(spec.option("block_size", 128))
        max_pos = getattr(model.config, "max_position_embeddings", None) or 2048
        seq_len = min(int(spec.option("seq_len", 2048)), max_pos)
        ids, calib = load_calibration(
            ctx, "gptq", int(spec.option("nsamples", 128)), seq_len, spec.option("calibration", DEFAULT_SOURCE)
        )
        targets = dict(iter_targets(model, spec))
        done: set[str] = set()
        errors: list[float] = []
        fallback: list[str] = []

        def solve(name: str, module: nn.Linear, hessian: torch.Tensor) -> None:
            w = module.weight.data
            q = gptq_quantize(w, hessian, spec.bits, spec.group_size, spec.symmetric, damp, act_order, block_size)
            errors.append(relative_error(w, q))
            w.copy_(q)
            done.add(name)

        prefix, blocks = decoder_layers(model)
        with torch.no_grad(), record_attention_kinds() as kinds:
            inputs = capture_block_inputs(model, blocks[0], ids, CALIBRATION_BATCH)
            for index, block in enumerate(blocks):
                block_prefix = f"{prefix}.{index}."
                names = [n for n, m in targets.items() if n.startswith(block_prefix) and isinstance(m, nn.Linear)]
                for round_names in _rounds(names):
                    collectors = {n: _HessianCollector(targets[n]) for n in round_names}
                    run_block(block, inputs)
                    for n, collector in collectors.items():
                        solve(n, targets[n], collector.hessian())
                inputs = run_block(block, inputs)
            head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
            head_name = next((n for n, m in targets.items() if m is head), None)
            if head_name is not None:
                norm = getattr(getattr(model, "model", model), "norm", nn.Identity())
                collector = _HessianCollector(head)
                for hidden, _ in inputs:
                    head(norm(hidden))
                solve(head_name, head, collector.hessian())
            for name, module in targets.items():
                if name not in done:  # embeddings and linear layers outside the blocks: RTN
                    w = module.weight.data
                    q = fake_quantize(w, spec.bits, spec.group_size, spec.symmetric)
                    errors.append(relative_error(w, q))
                    w.copy_(q)
                    fallback.append(name)

        params = sum(m.weight.numel() for m in targets.values())
        bits_total = sum(
            m.weight.numel() * effective_bits(spec.bits, m.weight.shape[1], spec.group_size, spec.symmetric)
            for m in targets.values()
        )
        skipped = skipped_names(model, spec)
        return QuantReport(
            method=self.name,
            layers_quantized=len(targets),
            layers_total=len(targets) + len(skipped),
            params_quantized=params,
            mean_rel_weight_error=sum(errors) / len(errors) if errors else None,
            effective_bits=bits_total / params if params else None,
            skipped_layers=skipped,
            seconds=time.perf_counter() - start,
            peak_memory_bytes=peak_memory(ctx.device),
            details={
                "calibration": calib,
                "calibration_attention": getattr(model.config, "_attn_implementation", None),
                "calibration_attention_calls": dict(kinds),
                "damp": damp,
                "act_order": act_order,
                "static_groups": act_order or spec.group_size is None,
                "rtn_fallback_layers": fallback,
            },
        )
