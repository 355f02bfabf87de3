"""GPTQ speed: the previous whole-model procedure against the current one, same model, same calibration.

    python benchmarks/gptq_speed.py                  # the paper's 340M shape (CUDA: bf16)
    python benchmarks/gptq_speed.py --small          # a CPU-sized shape

"old" is the procedure before the speed-up, rebuilt here from the library's pieces: one
Hessian per layer, a full block forward per round, quant/gptq_solver.gptq_reference per
layer. "new" is softpick_bench.quant.gptq (shared Hessians, early-stopped round forwards,
stacked solves, the Triton block kernel on CUDA). Both start from copies of one random-weight
Llama and the same random-but-fixed calibration ids. Printed: seconds of each (synchronised),
the ratio, and the largest relative difference between the two runs' per-layer relative
weight errors.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from softpick_bench.models.tiny import build_model, tiny_llama_config  # noqa: E402
from softpick_bench.quant.apply import quantize  # noqa: E402
from softpick_bench.quant.base import QuantContext, iter_targets, relative_error  # noqa: E402
from softpick_bench.quant.blockwise import capture_block_inputs, decoder_layers, run_block  # noqa: E402
from softpick_bench.quant.gptq import CALIBRATION_BATCH, _rounds  # noqa: E402
from softpick_bench.quant.gptq_solver import gptq_reference  # noqa: E402
from softpick_bench.quant.spec import QuantSpec  # noqa: E402

SHAPES = {
    # PAPER.md section 2: hidden 1024, 24 layers, 16 heads of 64, MLP 2816; Llama-2 vocabulary
    "340m": {"vocab_size": 32000, "hidden": 1024, "layers": 24, "heads": 16, "kv_heads": 16, "intermediate": 2816},
    "small": {"vocab_size": 2048, "hidden": 256, "layers": 2, "heads": 4, "kv_heads": 4, "intermediate": 768},
}


class _PerLayerHessian:
    """The previous collector: X^T X of one layer's inputs, one per layer."""

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


@torch.no_grad()
def old_gptq(model: nn.Module, spec: QuantSpec, ids: torch.Tensor) -> None:
    """The procedure before the speed-up (decoder blocks only; the head is skipped by the spec)."""
    targets = dict(iter_targets(model, spec))
    prefix, blocks = decoder_layers(model)
    inputs = capture_block_inputs(model, blocks[0], ids, CALIBRATION_BATCH)
    for index, block in enumerate(blocks):
        names = [n for n, m in targets.items() if n.startswith(f"{prefix}.{index}.") and isinstance(m, nn.Linear)]
        for round_names in _rounds(names):
            collectors = {n: _PerLayerHessian(targets[n]) for n in round_names}
            run_block(block, inputs)
            for n, collector in collectors.items():
                w = targets[n].weight.data
                w.copy_(gptq_reference(w, collector.hessian(), spec.bits, spec.group_size, spec.symmetric))
        inputs = run_block(block, inputs)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="a small shape that runs on a CPU in about a minute")
    ap.add_argument("--nsamples", type=int, help="calibration sequences (default 128; --small: 8)")
    ap.add_argument("--seq-len", type=int, help="calibration length (default 2048; --small: 256)")
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--kind", default="softpick")
    ap.add_argument("--verbose", action="store_true", help="print every layer's two errors")
    args = ap.parse_args()
    shape = SHAPES["small" if args.small else "340m"]
    nsamples = args.nsamples or (8 if args.small else 128)
    seq_len = args.seq_len or (256 if args.small else 2048)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    config = tiny_llama_config(**shape, max_positions=max(seq_len, 512))
    base = build_model(config, args.kind, seed=0).to(device=device, dtype=dtype)
    ids = torch.randint(3, shape["vocab_size"], (nsamples, seq_len), generator=torch.Generator().manual_seed(1))
    # only the decoder blocks: the old procedure is rebuilt for them (lm_head and embeddings skipped)
    spec = QuantSpec("gptq", args.bits, args.group_size, skip=("embed_tokens", "lm_head"))
    with torch.no_grad():  # warm-up: kernels compiled, allocator primed, before any timing
        base(ids[:1, :64].to(device))
    original = {n: m.weight.detach().clone() for n, m in iter_targets(base, spec)}

    seconds, layer_errors = {}, {}
    for name in ("old", "new"):
        model = copy.deepcopy(base)
        sync(device)
        t0 = time.perf_counter()
        if name == "old":
            old_gptq(model, spec, ids)
        else:
            quantize(model, spec, QuantContext(device=device, calibration=lambda: ids))
        sync(device)
        seconds[name] = time.perf_counter() - t0
        layer_errors[name] = {n: relative_error(original[n], m.weight.detach()) for n, m in iter_targets(model, spec)}
        del model
        if device == "cuda":
            torch.cuda.empty_cache()

    diffs = [abs(layer_errors["new"][n] - e) / e for n, e in layer_errors["old"].items()]
    if args.verbose:
        for n, e in layer_errors["old"].items():
            print(f"{n}: old {e:.6f} new {layer_errors['new'][n]:.6f}")
    gpu = torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu"
    print(
        f"GPTQ {args.bits}-bit g{args.group_size}, {'small' if args.small else '340m'} shape {shape}, "
        f"{args.kind} attention, {dtype}, calibration {nsamples} x {seq_len} tokens"
    )
    print(f"device: {gpu} ({device}); torch {torch.__version__}")
    # the first block sees identical inputs in both runs; later blocks see inputs that differ by the
    # rounding flips of the blocks before them, so their agreement also measures that propagation
    first = [d for d, n in zip(diffs, layer_errors["old"]) if ".layers.0." in n]
    print("| old s | new s | speed-up | layers | max rel. diff of per-layer errors (all / first block) "
          "| mean per-layer error (new) |")
    print("|---|---|---|---|---|---|")
    mean_err = sum(layer_errors["new"].values()) / len(diffs)
    print(
        f"| {seconds['old']:.2f} | {seconds['new']:.2f} | {seconds['old'] / seconds['new']:.2f}x | {len(diffs)} "
        f"| {max(diffs):.2e} / {max(first):.2e} | {mean_err:.4f} |"
    )


if __name__ == "__main__":
    main()
