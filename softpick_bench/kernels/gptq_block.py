"""Triton kernel for GPTQ's inner column loop: one launch per (block, scale segment).

Each program owns BLOCK_R rows of the block's weight columns (held in registers, fp32)
and walks the segment's columns in order: quantize column i on its grid, error
e = (w_i - q_i) / U[i, i], rank-1 update of the block's later columns with row i of U,
column i replaced by q_i. Rows are independent, so programs never talk to each other.
The arithmetic is the one of quant/gptq_solver._solve_segment_torch (fp32, IEEE division,
round half to even); the trailing update of the columns beyond the block stays a matmul
on the caller's side.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_R = 16  # rows per program


@triton.jit
def _gptq_segment_kernel(
    W,
    stride_w,
    U,
    stride_u,
    S,
    Z,
    stride_sr,
    stride_sc,
    E,
    stride_e,
    rows,
    width,
    i0,
    i1,
    qmin,
    qmax,
    BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # W, U, E point at the block's first column (row 0 for U's block rows); S, Z at column i0
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    c = tl.arange(0, BLOCK_N)
    rmask = r < rows
    cmask = c < width
    tile = rmask[:, None] & cmask[None, :]
    w = tl.load(W + r[:, None] * stride_w + c[None, :], mask=tile, other=0.0)
    e_all = tl.load(E + r[:, None] * stride_e + c[None, :], mask=tile, other=0.0)
    for i in range(i0, i1):
        sel = c[None, :] == i
        x = tl.sum(tl.where(sel, w, 0.0), axis=1)
        s = tl.load(S + r * stride_sr + (i - i0) * stride_sc, mask=rmask, other=1.0)
        z = tl.load(Z + r * stride_sr + (i - i0) * stride_sc, mask=rmask, other=0.0)
        q = tl.math.div_rn(x, s)
        # round half to even, as torch.round: floor(q + 0.5), one down where q + 0.5 is an odd integer
        f = tl.math.floor(q + 0.5)
        f = tl.where((f - q == 0.5) & (f - 2.0 * tl.math.floor(f * 0.5) == 1.0), f - 1.0, f)
        qc = (tl.minimum(tl.maximum(f + z, qmin), qmax) - z) * s
        d = tl.load(U + i * stride_u + i)
        e = tl.math.div_rn(x - qc, d)
        u_row = tl.load(U + i * stride_u + c, mask=cmask & (c > i), other=0.0)
        w = w - e[:, None] * u_row[None, :]
        w = tl.where(sel, qc[:, None], w)
        e_all = tl.where(sel, e[:, None], e_all)
    tl.store(W + r[:, None] * stride_w + c[None, :], w, mask=tile)
    tl.store(E + r[:, None] * stride_e + c[None, :], e_all, mask=tile)


def solve_segment(w, u, b0, b1, i0, i1, scale, zero, err, bits, symmetric, grid) -> None:
    """Drop-in for gptq_solver._solve_segment_torch: same arguments, same in-place results."""
    from softpick_bench.quant.rtn import int_range

    qmin, qmax = int_range(bits, symmetric, grid)
    rows = w.shape[0]
    width = b1 - b0
    wb, ub, eb = w[:, b0:b1], u[b0:b1, b0:b1], err[:, :width]
    for t in (wb, ub, eb):
        if t.dtype != torch.float32 or t.stride(-1) != 1:
            raise ValueError("gptq segment kernel needs float32 tensors with a unit last stride")
    scale = scale.float().contiguous()
    zero = zero.float().expand_as(scale).contiguous()
    grid_size = (triton.cdiv(rows, BLOCK_R),)
    _gptq_segment_kernel[grid_size](
        wb,
        wb.stride(0),
        ub,
        ub.stride(0),
        scale,
        zero,
        scale.stride(0),
        scale.stride(1) if scale.shape[1] > 1 else 0,
        eb,
        eb.stride(0),
        rows,
        width,
        i0 - b0,
        i1 - b0,
        float(qmin),
        float(qmax),
        BLOCK_R=BLOCK_R,
        BLOCK_N=triton.next_power_of_2(width),
    )
