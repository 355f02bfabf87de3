"""Attention used while training: one transformers attention name per (kind, backend).

Training rows have no padding, so these functions take plain causal attention and need
no mask (transformers hands an unregistered-mask name attention_mask=None). Backends:
- "sdpa": torch scaled_dot_product_attention, exact softmax (softmax only; its CUDA backward
  is not deterministic, so pairs train through the kernel: `choose_backend`);
- "kernel": the Triton flash kernel with its backward (softpick_bench.kernels.flash);
- "reference": the materialised reference (softpick_bench.kernels.reference), any kind.
After training the model is switched back to its registered kind before it is saved, so
the checkpoint says "attention_kind": kind and evaluates like any other.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from softpick_bench.kernels import reference

log = logging.getLogger(__name__)

BACKENDS = ("sdpa", "kernel", "reference")


def _forward(kind: str, backend: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    if backend == "kernel":
        from softpick_bench.kernels.flash import flash_attention  # imports triton

        return flash_attention(q, k, v, kind=kind, causal=True, scale=scale)
    return reference.attention(q, k, v, kind=kind, causal=True, scale=scale)


def train_attention_name(kind: str, backend: str) -> str:
    """Register (idempotently) and return the attention name for `kind` on `backend`."""
    if backend not in BACKENDS:
        raise ValueError(f"training attention backend {backend!r} unknown; valid: {', '.join(BACKENDS)}")
    if backend == "sdpa" and kind != "softmax":
        raise ValueError(f"the sdpa backend computes softmax only, not {kind!r}")
    name = f"sb_train_{kind}_{backend}"

    def attention_fn(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        if attention_mask is not None:
            raise ValueError(f"{name}: training attention takes no mask (rows are unpadded)")
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return _forward(kind, backend, query, key, value, scale).transpose(1, 2).contiguous(), None

    attention_fn.__name__ = name
    AttentionInterface.register(name, attention_fn)
    return name


def kernel_self_check(kind: str, device: str = "cuda", tol: float = 3e-2) -> tuple[bool, str]:
    """Does the Triton kernel's forward and backward match the reference here? (ok, why).

    Run before a GPU training run picks the kernel: bf16 inputs, causal, T not a multiple
    of the tiles, compared with the float32 reference by relative error.
    """
    try:
        from softpick_bench.kernels.flash import flash_attention

        gen = torch.Generator(device=device).manual_seed(0)
        shape = (2, 4, 200, 64)
        q, k, v = (torch.randn(shape, device=device, generator=gen) for _ in range(3))
        q = q * 2  # sharper scores: some positive, many negative
        do = torch.randn(shape, device=device, generator=gen)
        errs = []
        for fn, dt in ((flash_attention, torch.bfloat16), (reference.attention, torch.float32)):
            xs = [t.to(dt).detach().requires_grad_(True) for t in (q, k, v)]
            out = fn(*xs, kind=kind, causal=True, scale=64**-0.5)
            out.backward(do.to(dt))
            errs.append([out.float()] + [x.grad.float() for x in xs])
        rel = [float((a - b).norm() / b.norm().clamp_min(1e-12)) for a, b in zip(errs[0], errs[1])]
        ok = all(math.isfinite(r) and r < tol for r in rel)
        return ok, f"rel err out/dq/dk/dv = {', '.join(f'{r:.2e}' for r in rel)} (tol {tol})"
    except Exception as exc:  # missing module, compile failure, bad result: the caller reports it
        return False, f"{type(exc).__name__}: {exc}"


def choose_backend(kinds, device: str, requested: str = "auto") -> tuple[str, str]:
    """(backend, why): one training attention path for every kind of a pair.

    Both sides of a pair go through the same code, so that they differ only in their
    normalisation and retraining a seed reproduces both bit for bit. auto: CPU -> the
    reference; CUDA -> the Triton kernel, whose backward is deterministic, once it passes its
    self-check for every kind. A failing self-check is an error, never a silent switch to
    another path; `attention_backend: reference` chooses the slow exact path explicitly.
    """
    kinds = tuple(kinds)
    if requested not in ("auto", *BACKENDS):
        raise ValueError(f"training attention backend {requested!r} unknown; valid: auto, {', '.join(BACKENDS)}")
    if requested == "sdpa" and set(kinds) != {"softmax"}:
        raise ValueError(f"the sdpa backend computes softmax only, not {', '.join(k for k in kinds if k != 'softmax')}")
    if requested != "auto":
        return requested, "requested"
    if device != "cuda":
        return "reference", "CPU: the reference path"
    checks = {kind: kernel_self_check(kind, device) for kind in kinds}
    failed = {kind: why for kind, (ok, why) in checks.items() if not ok}
    if failed:
        raise RuntimeError("the Triton attention kernel failed its self-check ("
                           + "; ".join(f"{k}: {why}" for k, why in failed.items())
                           + "); set attention_backend: reference to train through the materialised reference")
    return "kernel", "Triton kernel for every kind, self-check passed: " + "; ".join(
        f"{k} {why}" for k, (_, why) in checks.items())


def implementation(backend: str, head_dim: int, seq_len: int) -> dict:
    """What computes training attention on `backend`, recorded with each checkpoint."""
    if backend == "kernel":
        from dataclasses import asdict

        import triton

        from softpick_bench.kernels.flash import default_config

        return {"backend": "kernel", "module": "softpick_bench.kernels.flash", "triton": triton.__version__,
                "config": asdict(default_config(head_dim, seq_len)),
                "backward": "dK/dV and dQ in separate kernels, every element written by one program (no atomics)"}
    if backend == "sdpa":
        return {"backend": "sdpa", "module": "torch.nn.functional.scaled_dot_product_attention",
                "backward": "torch's choice of SDPA kernel; not deterministic on CUDA"}
    return {"backend": "reference", "module": "softpick_bench.kernels.reference",
            "backward": "torch autograd of the materialised scores"}
