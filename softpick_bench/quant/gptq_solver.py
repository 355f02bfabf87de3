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
"""

from __future__ import annotations

import torch

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.quant.rtn import quant_dequant, scale_zero


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


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group_size: int | None,
    symmetric: bool,
    damp: float = 0.01,
    act_order: bool = False,
    block_size: int = 128,
) -> torch.Tensor:
    """Quantize-dequantize `weight` (out, in) with GPTQ against `hessian` (in, in); same shape and dtype."""
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
    static = group_size is None or act_order
    if static:
        s, z = scale_zero(w.reshape(out_features, in_features // g, g), bits, symmetric)
        col_scale = s.repeat_interleave(g, dim=1).reshape(out_features, in_features)
        col_zero = z.repeat_interleave(g, dim=1).reshape(out_features, in_features)

    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(in_features, device=w.device)
    w, h = w[:, perm], h[perm][:, perm]
    if static:
        col_scale, col_zero = col_scale[:, perm], col_zero[:, perm]
    u = _inverse_cholesky_upper(h, damp)

    q = torch.zeros_like(w)
    scale = zero = None
    for b0 in range(0, in_features, block_size):
        b1 = min(b0 + block_size, in_features)
        wb = w[:, b0:b1].clone()
        err = torch.zeros_like(wb)
        ub = u[b0:b1, b0:b1]
        for i in range(b1 - b0):
            col = b0 + i
            if static:
                scale, zero = col_scale[:, col : col + 1], col_zero[:, col : col + 1]
            elif col % g == 0:
                # group start: scale from the current (error-updated) weights of the whole group
                group = torch.cat([wb[:, i:], w[:, b1:]], dim=1)[:, :g]
                scale, zero = scale_zero(group, bits, symmetric)
            column = wb[:, i : i + 1]
            qc = quant_dequant(column, scale, zero, bits, symmetric)
            q[:, col : col + 1] = qc
            e = (column - qc) / ub[i, i]
            wb[:, i:] -= e * ub[i : i + 1, i:]
            err[:, i : i + 1] = e
        w[:, b1:] -= err @ u[b0:b1, b1:]

    q = q[:, torch.argsort(perm)]
    return q.to(weight.dtype)


def output_error(weight: torch.Tensor, quantized: torch.Tensor, inputs: torch.Tensor) -> float:
    """Relative error of the layer output on `inputs` (n, in): ||X Q^T - X W^T|| / ||X W^T||."""
    ref = inputs.float() @ weight.float().T
    return float((inputs.float() @ quantized.float().T - ref).norm() / ref.norm().clamp_min(1e-30))
