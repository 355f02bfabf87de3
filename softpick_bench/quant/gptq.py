"""GPTQ for whole models, implemented in the project, block by block.

Order of work (the "true sequential" variant of the paper's reference code):
1. calibration windows (quant/calibration.py) run through the model up to the first
   decoder block; its inputs (hidden states and kwargs: rotary embeddings, boolean mask)
   are kept per batch;
2. for each block, its linear layers are quantized in four rounds, in the order the data
   flows: q/k/v, then o, then gate/up, then down. Before each round the block is run on
   its current inputs with the layers of the earlier rounds already quantized, and the
   Hessians of this round's layers are collected from their inputs. Every layer is fitted
   to the inputs it will really see. Each round's forward stops as soon as all its layers
   have seen their input (the rest of the block would be thrown away), and layers fed the
   very same tensor (q/k/v; gate/up) share one Hessian, accumulated once and solved in one
   call with their weights stacked (GPTQ's rows are independent given the Hessian);
3. the block's outputs with all its layers quantized become the next block's inputs.
Each forward pass runs the model's own attention kind through kernels.dispatch (a softpick
model is calibrated through softpick attention); the report counts the kinds that ran.

Layers outside the blocks: lm_head (when not skipped) gets GPTQ with the final-norm
output as its input; embeddings (no input Hessian) fall back to RTN, recorded in the report.
"""

from __future__ import annotations

import functools
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
from softpick_bench.quant.gptq_solver import gptq_quantize, triton_solver_enabled
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


class _RoundDone(Exception):
    """Raised by the collector's hook once every layer of the round has seen this batch's input."""


class _SharedHessians:
    """Sums X^T X (float32) of a round's layers' inputs, once per distinct input tensor.

    Layers fed the very same tensor object share one sum; the first batch decides who
    shares with whom, and a later batch that splits them raises (the Hessians would be wrong).
    """

    def __init__(self, modules: dict[str, nn.Linear]):
        self.modules = modules
        self.owner: dict[str, int] = {}  # layer name -> index of its sum
        self.sums: list[torch.Tensor] = []
        self.counts: list[int] = []
        self.last: list[torch.Tensor | None] = []  # the input each sum saw last (identity test)
        self.seen: set[str] = set()  # layers that saw this batch
        self.handles = [m.register_forward_pre_hook(functools.partial(self._hook, n)) for n, m in modules.items()]

    def _add(self, k: int, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1, x.shape[-1]).float()
        self.sums[k].addmm_(flat.T, flat)
        self.counts[k] += flat.shape[0]
        self.last[k] = x

    def _hook(self, name: str, _module, args) -> None:
        x = args[0]
        if name not in self.owner:
            k = next((i for i, t in enumerate(self.last) if t is x), None)
            if k is None:
                n = x.shape[-1]
                self.sums.append(torch.zeros(n, n, dtype=torch.float32, device=x.device))
                self.counts.append(0)
                self.last.append(None)
                k = len(self.sums) - 1
                self._add(k, x)
            self.owner[name] = k
        else:
            k = self.owner[name]
            if self.last[k] is not x:
                sharers = [n for n in self.seen if self.owner[n] == k]
                if sharers:
                    raise UnsupportedQuantError(
                        f"GPTQ: {name} and {sharers[0]} shared an input on the first calibration batch but not later"
                    )
                self._add(k, x)
        self.seen.add(name)
        if len(self.seen) == len(self.modules):
            raise _RoundDone

    def run(self, forward) -> None:
        """One batch: call forward() until every layer has seen its input."""
        self.seen.clear()
        try:
            forward()
        except _RoundDone:
            return
        missing = sorted(set(self.modules) - self.seen)
        raise UnsupportedQuantError(f"GPTQ: layers {missing} received no input in the calibration forward")

    def groups(self) -> list[tuple[list[str], torch.Tensor]]:
        """(layer names sharing an input, their Hessian 2/n X^T X), in the modules' order; removes the hooks."""
        for handle in self.handles:
            handle.remove()
        self.last.clear()
        order = list(dict.fromkeys(self.owner[n] for n in self.modules))
        return [
            ([n for n in self.modules if self.owner[n] == k], 2.0 * self.sums[k] / max(self.counts[k], 1))
            for k in order
        ]


def collect_hessians(block: nn.Module, inputs, modules: dict[str, nn.Linear]) -> list[tuple[list[str], torch.Tensor]]:
    """Run `block` on every batch of `inputs` just far enough to collect the Hessians of `modules`."""
    collector = _SharedHessians(modules)
    try:
        for hidden, kwargs in inputs:
            collector.run(functools.partial(block, hidden, **kwargs))
    except BaseException:
        for handle in collector.handles:
            handle.remove()
        raise
    return collector.groups()


@register
class GPTQ(WeightQuantizer):
    name = "gptq"  # bits and options: quant/declared.py
    needs_calibration = True

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

        def solve(names: list[str], hessian: torch.Tensor) -> None:
            weights = [targets[n].weight.data for n in names]
            stacked = torch.cat(weights) if len(weights) > 1 else weights[0]
            q = gptq_quantize(
                stacked, hessian, spec.bits, spec.group_size, spec.symmetric, damp, act_order, block_size, spec.grid
            )
            for name, w, qw in zip(names, weights, q.split([w.shape[0] for w in weights])):
                errors.append(relative_error(w, qw))
                w.copy_(qw)
                done.add(name)

        prefix, blocks = decoder_layers(model)
        with torch.no_grad(), record_attention_kinds() as kinds:
            inputs = capture_block_inputs(model, blocks[0], ids, CALIBRATION_BATCH)
            for index, block in enumerate(blocks):
                block_prefix = f"{prefix}.{index}."
                names = [n for n, m in targets.items() if n.startswith(block_prefix) and isinstance(m, nn.Linear)]
                for round_names in _rounds(names):
                    for group, hessian in collect_hessians(block, inputs, {n: targets[n] for n in round_names}):
                        solve(group, hessian)
                inputs = run_block(block, inputs)
            head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
            head_name = next((n for n, m in targets.items() if m is head), None)
            if head_name is not None:
                norm = getattr(getattr(model, "model", model), "norm", nn.Identity())
                collector = _SharedHessians({head_name: head})
                for hidden, _ in inputs:
                    collector.run(functools.partial(lambda h: head(norm(h)), hidden))
                for group, hessian in collector.groups():
                    solve(group, hessian)
            for name, module in targets.items():
                if name not in done:  # embeddings and linear layers outside the blocks: RTN
                    w = module.weight.data
                    q = fake_quantize(w, spec.bits, spec.group_size, spec.symmetric, spec.grid)
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
                "solver": "triton" if ctx.device.startswith("cuda") and triton_solver_enabled() else "torch",
            },
        )
