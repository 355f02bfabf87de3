"""The GPTQ solver for one linear layer (Frantar et al., 2023, "GPTQ", Algorithm 1).

Given the layer's weight W (out, in) and the Hessian H = 2/n * sum x x^T of its inputs,
columns are quantized one at a time; each column's rounding error, divided by the
diagonal of the upper Cholesky factor U of H^-1, is pushed onto the columns not yet
quantized (row i of U gives the optimal update). Columns are processed in blocks of
`block_size`: inside a block updates are exact rank-1 steps, the rest of the matrix gets
the block's accumulated error in one product (the "lazy batch" trick).

Grouped scales: without activation ordering, a group's scale and zero point are taken
when its first column is reached, from the already-updated weights (as in the paper).
With activation ordering (columns visited by decreasing H diagonal), groups are "static":
every group's scale is fixed up front from the original weights, so the stored format is
the same as without reordering (contiguous groups, no per-column group index).

Two implementations of the same algorithm:
- `gptq_reference`: the plain column loop (each step a handful of tensor ops on one column,
  then a rank-1 update of the block), kept as the reference the tests compare against;
- `gptq_quantize`: the same steps with the quantized column written in place and one fused
  rank-1 update per column; on CUDA each block's column loop runs inside one Triton kernel
  (kernels/gptq_block.py), so a block costs one launch instead of ~10 per column.
Both take the Cholesky factor of the damped inverse Hessian once per layer (fp32) and give
the same result to float rounding (tests/test_quant_gptq.py).
"""

from __future__ import annotations

import os

import torch

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.quant.rtn import int_range, quant_dequant, scale_zero


def _inverse_cholesky_upper(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1; more damping if H is not positive definite."""
    n = h.shape[0]
    eye = torch.eye(n, dtype=h.dtype, device=h.device)
    mean_diag = torch.diag(h).mean()
    for attempt in range(6):
        lam = damp * (10**attempt) * mean_diag
        factor, info = torch.linalg.cholesky_ex(h + lam * eye)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(factor)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper
    raise UnsupportedQuantError("GPTQ: the calibration Hessian is not positive definite even with 10^5 x dampening")


def _prepare(weight, hessian, bits, group_size, symmetric, grid, damp, act_order):
    """fp32 weight and damped-inverse Cholesky factor, both in quantization order, with the column order
    and (static groups) the per-column scales and zero points; shared by both implementations."""
    out_features, in_features = weight.shape
    g = in_features if group_size is None else group_size
    if in_features % g:
        raise UnsupportedQuantError(f"group size {g} does not divide the input dimension {in_features}")
    w = weight.detach().float().clone()
    h = hessian.detach().float().clone()

    dead = torch.diag(h) == 0  # inputs never active: their weights cannot matter, set them to 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0

    # static scales: per output channel (no groups) or per contiguous group of the original weights
    static = None
    if group_size is None or act_order:
        s, z = scale_zero(w.reshape(out_features, in_features // g, g), bits, symmetric, grid)
        static = (
            s.repeat_interleave(g, dim=1).reshape(out_features, in_features),
            z.repeat_interleave(g, dim=1).reshape(out_features, in_features),
        )

    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(in_features, device=w.device)
    w, h = w[:, perm], h[perm][:, perm]
    if static is not None:
        static = (static[0][:, perm], static[1][:, perm])
    return w.contiguous(), _inverse_cholesky_upper(h, damp).contiguous(), perm, static, g


def gptq_reference(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group_size: int | None,
    symmetric: bool,
    damp: float = 0.01,
    act_order: bool = False,
    block_size: int = 128,
    grid: str = "full",
) -> torch.Tensor:
    """The plain column-by-column GPTQ loop (the reference for `gptq_quantize`); same shape and dtype."""
    w, u, perm, static, g = _prepare(weight, hessian, bits, group_size, symmetric, grid, damp, act_order)
    in_features = w.shape[1]
    q = torch.zeros_like(w)
    scale = zero = None
    for b0 in range(0, in_features, block_size):
        b1 = min(b0 + block_size, in_features)
        wb = w[:, b0:b1].clone()
        err = torch.zeros_like(wb)
        ub = u[b0:b1, b0:b1]
        for i in range(b1 - b0):
            col = b0 + i
            if static is not None:
                scale, zero = static[0][:, col : col + 1], static[1][:, col : col + 1]
            elif col % g == 0:
                # group start: scale from the current (error-updated) weights of the whole group
                group = torch.cat([wb[:, i:], w[:, b1:]], dim=1)[:, :g]
                scale, zero = scale_zero(group, bits, symmetric, grid)
            column = wb[:, i : i + 1]
            qc = quant_dequant(column, scale, zero, bits, symmetric, grid)
            q[:, col : col + 1] = qc
            e = (column - qc) / ub[i, i]
            wb[:, i:] -= e * ub[i : i + 1, i:]
            err[:, i : i + 1] = e
        w[:, b1:] -= err @ u[b0:b1, b1:]

    q = q[:, torch.argsort(perm)]
    return q.to(weight.dtype)


def _segments(b0: int, b1: int, g: int, static: bool) -> list[tuple[int, int]]:
    """Column ranges of block [b0, b1) inside which the scale does not change (cut at group starts)."""
    if static:
        return [(b0, b1)]
    cuts = sorted({b0, b1, *range((b0 + g - 1) // g * g, b1, g)})
    return list(zip(cuts[:-1], cuts[1:]))


def _solve_segment_torch(w, u, b0, b1, i0, i1, scale, zero, err, bits, symmetric, grid) -> None:
    """Columns [i0, i1) of block [b0, b1): quantize in place in w, rank-1 updates inside the block."""
    qmin, qmax = int_range(bits, symmetric, grid)
    inv_diag = (1.0 / torch.diag(u)[i0:i1]).tolist()
    for col in range(i0, i1):
        column = w[:, col : col + 1]
        s = scale if scale.shape[1] == 1 else scale[:, col - i0 : col - i0 + 1]
        z = zero if zero.shape[1] == 1 else zero[:, col - i0 : col - i0 + 1]
        qc = (torch.clamp(torch.round(column / s) + z, qmin, qmax) - z) * s
        e = err[:, col - b0]
        torch.sub(column[:, 0], qc[:, 0], out=e)
        e.mul_(inv_diag[col - i0])
        column.copy_(qc)
        if col + 1 < b1:
            w[:, col + 1 : b1].addr_(e, u[col, col + 1 : b1], alpha=-1.0)


def triton_solver_enabled() -> bool:
    """The Triton block solver runs on CUDA unless SOFTPICK_GPTQ_TRITON=0 (a GPU where it fails
    its check); the solver used is recorded in each GPTQ cell's report."""
    return os.environ.get("SOFTPICK_GPTQ_TRITON", "1") != "0"


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group_size: int | None,
    symmetric: bool,
    damp: float = 0.01,
    act_order: bool = False,
    block_size: int = 128,
    grid: str = "full",
    use_triton: bool | None = None,
) -> torch.Tensor:
    """Quantize-dequantize `weight` (out, in) with GPTQ against `hessian` (in, in); same shape and dtype.

    Rows are independent given the Hessian, so layers sharing an input may be stacked along
    dim 0 and solved in one call. use_triton: None = on CUDA tensors (tests force it on CPU,
    where the Triton interpreter runs it).
    """
    w, u, perm, static, g = _prepare(weight, hessian, bits, group_size, symmetric, grid, damp, act_order)
    out_features, in_features = w.shape
    if use_triton is None:
        use_triton = w.is_cuda and triton_solver_enabled()
    if use_triton:
        from softpick_bench.kernels.gptq_block import solve_segment as solve
    else:
        solve = _solve_segment_torch
    err = torch.empty(out_features, min(block_size, in_features), dtype=w.dtype, device=w.device)
    scale = zero = None
    for b0 in range(0, in_features, block_size):
        b1 = min(b0 + block_size, in_features)
        for i0, i1 in _segments(b0, b1, g, static is not None):
            if static is not None:
                scale, zero = static[0][:, i0:i1], static[1][:, i0:i1]
            elif i0 % g == 0:  # group start: scale from the current (error-updated) weights of the group
                scale, zero = scale_zero(w[:, i0 : i0 + g], bits, symmetric, grid)
            solve(w, u, b0, b1, i0, i1, scale, zero, err, bits, symmetric, grid)
        if b1 < in_features:
            w[:, b1:].addmm_(err[:, : b1 - b0], u[b0:b1, b1:], alpha=-1.0)
    return w[:, torch.argsort(perm)].to(weight.dtype)


def output_error(weight: torch.Tensor, quantized: torch.Tensor, inputs: torch.Tensor) -> float:
    """Relative error of the layer output on `inputs` (n, in): ||X Q^T - X W^T|| / ||X W^T||."""
    ref = inputs.float() @ weight.float().T
    return float((inputs.float() @ quantized.float().T - ref).norm() / ref.norm().clamp_min(1e-30))
