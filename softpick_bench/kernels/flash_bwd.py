"""Triton backward kernels: Delta preprocessing, dK/dV (one program per key block), dQ.

From the forward's LSE = m + log(l [+ eps]) (natural log), per score s (PAPER.md section 1):

    E = exp(s - LSE),  Z = exp(-LSE)
    softpick:  P = relu(E - Z),  dS = E * (step(s) dP - sign(s) Delta)
    rectified: P = relu(E - Z),  dS = E * step(s) (dP - Delta)
    softmax, softmax1: P = E,    dS = P (dP - Delta)
    dP = dO V^T, Delta = rowsum(dO * O), dV = P^T dO, dQ = scale dS K, dK = scale dS^T Q.

sign(0) is taken as -1 (the set s = 0 has measure zero). The shift c = max(0, rowmax)
is treated as a constant: the reference's autograd also differentiates eps * e^c
through the max, a term eps / (l + eps) relative to Delta on the argmax key only
(about 1e-6 of the gradient for ordinary rows).

GQA: a dK/dV program loops over the query heads of its group, so no atomics are needed.
Masked keys get P = dS = 0. Rows outside [q_begin, q_end) load as zeros, so they add nothing.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def flash_bwd_delta_kernel(
    O, DO, DELTA, META,
    stride_ob, stride_oh, stride_om,
    stride_db, stride_dh, stride_dm,
    stride_lb, stride_lh,
    n_heads,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
):
    pid_sh = tl.program_id(0)
    seq = pid_sh // n_heads
    h = pid_sh % n_heads
    meta = META + seq * 6
    tb = tl.load(meta).to(tl.int64)
    q_begin = tl.load(meta + 1)
    q_end = tl.load(meta + 2)
    offs_m = q_begin + tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    ok = (offs_m < q_end)[:, None] & (offs_d < HEAD_DIM)[None, :]
    o = tl.load(O + tb * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :], mask=ok, other=0.0)
    do = tl.load(DO + tb * stride_db + h * stride_dh + offs_m[:, None] * stride_dm + offs_d[None, :], mask=ok, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + tb * stride_lb + h * stride_lh + offs_m, delta, mask=offs_m < q_end)


@triton.jit
def _grad_scores(s2, e, dp, dlt, KIND: tl.constexpr):
    """dS from the scores' signs, E, dP and Delta broadcast to the tile's shape."""
    if KIND == 1:
        return e * tl.where(s2 > 0.0, dp - dlt, dlt)
    elif KIND == 2:
        return tl.where(s2 > 0.0, e * (dp - dlt), 0.0)
    else:
        return e * (dp - dlt)


@triton.jit
def _bwd_kv_block(
    dk, dv, k, v, Qh, DOh, LSEh, DELTAh, MASKh, start_m, offs_n, offs_d,
    stride_qm, stride_dom, stride_mq, stride_mk, q_end, k_end, delta, qk_scale,
    KIND: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """Accumulate one block of BLOCK_M query rows into dK, dV of a key block (transposed tiles)."""
    offs_m = start_m + tl.arange(0, BLOCK_M)
    m_ok = offs_m < q_end
    ok = m_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
    q = tl.load(Qh + offs_m[:, None] * stride_qm + offs_d[None, :], mask=ok, other=0.0)
    do = tl.load(DOh + offs_m[:, None] * stride_dom + offs_d[None, :], mask=ok, other=0.0)
    lse2 = tl.load(LSEh + offs_m, mask=m_ok, other=0.0) * 1.4426950408889634
    dlt = tl.load(DELTAh + offs_m, mask=m_ok, other=0.0)
    s2t = tl.dot(k, tl.trans(q))  # (BLOCK_N, BLOCK_M) raw scores; only their sign is used below
    et = tl.exp2(s2t * qk_scale - lse2[None, :])
    if KIND == 1 or KIND == 2:
        pt = tl.maximum(et - tl.exp2(-lse2)[None, :], 0.0)
    else:
        pt = et
    if MASKED:
        valid = m_ok[None, :]
        if CAUSAL:
            valid = valid & (offs_n[:, None] <= offs_m[None, :] + delta)
        if HAS_MASK:
            in_bounds = m_ok[None, :] & (offs_n < k_end)[:, None]
            allowed = tl.load(MASKh + offs_m[None, :] * stride_mq + offs_n[:, None] * stride_mk, mask=in_bounds, other=0)
            valid = valid & (allowed != 0)
        pt = tl.where(valid, pt, 0.0)
    dv += tl.dot(pt.to(do.dtype), do)
    dpt = tl.dot(v, tl.trans(do))
    dst = _grad_scores(s2t, et, dpt, dlt[None, :], KIND)
    if MASKED:
        dst = tl.where(valid, dst, 0.0)
    dk += tl.dot(dst.to(q.dtype), q)
    return dk, dv


@triton.jit
def flash_bwd_dkdv_kernel(
    Q, K, V, DO, DK, DV, LSE, DELTA, META, MASK,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_dom,
    stride_dkb, stride_dkh, stride_dkn,
    stride_dvb, stride_dvh, stride_dvn,
    stride_lb, stride_lh,
    stride_mb, stride_mh, stride_mq, stride_mk,
    n_kv_heads, group, qk_scale, sm_scale,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_sh = tl.program_id(0)
    seq = pid_sh // n_kv_heads
    hk = pid_sh % n_kv_heads
    meta = META + seq * 6
    tb = tl.load(meta).to(tl.int64)
    q_begin = tl.load(meta + 1)
    q_end = tl.load(meta + 2)
    k_begin = tl.load(meta + 3)
    k_end = tl.load(meta + 4)
    delta = tl.load(meta + 5)

    start_n = k_begin + tl.program_id(1) * BLOCK_N
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kv_ok = (offs_n < k_end)[:, None] & (offs_d < HEAD_DIM)[None, :]
    k = tl.load(K + tb * stride_kb + hk * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :], mask=kv_ok, other=0.0)
    v = tl.load(V + tb * stride_vb + hk * stride_vh + offs_n[:, None] * stride_vn + offs_d[None, :], mask=kv_ok, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)

    # Query rows [q_lo, q_mid) need the mask (causal diagonal); [q_mid, q_end) see the whole block.
    q_lo = q_begin
    if CAUSAL:
        q_lo = tl.maximum(q_begin, start_n - delta)
    if HAS_MASK:
        q_mid = q_end
    elif CAUSAL:
        q_full = start_n + BLOCK_N - 1 - delta
        q_mid = q_lo + (tl.maximum(q_full - q_lo, 0) + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    else:
        q_mid = q_lo
    q_mid = tl.minimum(q_mid, q_end)
    q_lo = tl.where(start_n < k_end, q_lo, q_end)  # empty key block: no work
    q_mid = tl.where(start_n < k_end, q_mid, q_end)

    for g in range(group):
        h = hk * group + g
        Qh = Q + tb * stride_qb + h * stride_qh
        DOh = DO + tb * stride_dob + h * stride_doh
        LSEh = LSE + tb * stride_lb + h * stride_lh
        DELTAh = DELTA + tb * stride_lb + h * stride_lh
        MASKh = MASK
        if HAS_MASK:
            MASKh = MASK + tb * stride_mb + h * stride_mh
        for start_m in range(q_lo, q_mid, BLOCK_M):
            dk, dv = _bwd_kv_block(
                dk, dv, k, v, Qh, DOh, LSEh, DELTAh, MASKh, start_m, offs_n, offs_d,
                stride_qm, stride_dom, stride_mq, stride_mk, q_end, k_end, delta, qk_scale,
                KIND, True, CAUSAL, HAS_MASK, HEAD_DIM, BLOCK_M,
            )
        for start_m in range(q_mid, q_end, BLOCK_M):
            dk, dv = _bwd_kv_block(
                dk, dv, k, v, Qh, DOh, LSEh, DELTAh, MASKh, start_m, offs_n, offs_d,
                stride_qm, stride_dom, stride_mq, stride_mk, q_end, k_end, delta, qk_scale,
                KIND, False, CAUSAL, HAS_MASK, HEAD_DIM, BLOCK_M,
            )

    dk = dk * sm_scale
    tl.store(DK + tb * stride_dkb + hk * stride_dkh + offs_n[:, None] * stride_dkn + offs_d[None, :],
             dk.to(DK.dtype.element_ty), mask=kv_ok)
    tl.store(DV + tb * stride_dvb + hk * stride_dvh + offs_n[:, None] * stride_dvn + offs_d[None, :],
             dv.to(DV.dtype.element_ty), mask=kv_ok)


@triton.jit
def _bwd_q_block(
    dq, q, do, lse2, dlt, Kh, Vh, MASK_ROW, start_n, offs_m, offs_d,
    stride_kn, stride_vn, stride_mk, q_end, k_end, delta, qk_scale,
    KIND: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Accumulate one block of BLOCK_N keys into dQ of a query block."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    n_ok = offs_n < k_end
    ok = n_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
    k = tl.load(Kh + offs_n[:, None] * stride_kn + offs_d[None, :], mask=ok, other=0.0)
    v = tl.load(Vh + offs_n[:, None] * stride_vn + offs_d[None, :], mask=ok, other=0.0)
    s2 = tl.dot(q, tl.trans(k))  # raw scores; only their sign is used below
    e = tl.exp2(s2 * qk_scale - lse2[:, None])
    dp = tl.dot(do, tl.trans(v))
    ds = _grad_scores(s2, e, dp, dlt[:, None], KIND)
    if MASKED:
        valid = n_ok[None, :]
        if CAUSAL:
            valid = valid & (offs_n[None, :] <= offs_m[:, None] + delta)
        if HAS_MASK:
            in_bounds = n_ok[None, :] & (offs_m < q_end)[:, None]
            allowed = tl.load(MASK_ROW + offs_n[None, :] * stride_mk, mask=in_bounds, other=0)
            valid = valid & (allowed != 0)
        ds = tl.where(valid, ds, 0.0)
    dq += tl.dot(ds.to(k.dtype), k)
    return dq


@triton.jit
def flash_bwd_dq_kernel(
    Q, K, V, DO, DQ, LSE, DELTA, META, MASK,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_dom,
    stride_dqb, stride_dqh, stride_dqm,
    stride_lb, stride_lh,
    stride_mb, stride_mh, stride_mq, stride_mk,
    n_heads, group, qk_scale, sm_scale, n_mblocks,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_sh = tl.program_id(0)
    pid_m = n_mblocks - 1 - tl.program_id(1)
    seq = pid_sh // n_heads
    h = pid_sh % n_heads
    hk = h // group
    meta = META + seq * 6
    tb = tl.load(meta).to(tl.int64)
    q_begin = tl.load(meta + 1)
    q_end = tl.load(meta + 2)
    k_begin = tl.load(meta + 3)
    k_end = tl.load(meta + 4)
    delta = tl.load(meta + 5)

    start_m = q_begin + pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < q_end
    ok = m_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
    q = tl.load(Q + tb * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :], mask=ok, other=0.0)
    do = tl.load(DO + tb * stride_dob + h * stride_doh + offs_m[:, None] * stride_dom + offs_d[None, :], mask=ok, other=0.0)
    lse2 = tl.load(LSE + tb * stride_lb + h * stride_lh + offs_m, mask=m_ok, other=0.0) * 1.4426950408889634
    dlt = tl.load(DELTA + tb * stride_lb + h * stride_lh + offs_m, mask=m_ok, other=0.0)
    Kh = K + tb * stride_kb + hk * stride_kh
    Vh = V + tb * stride_vb + hk * stride_vh
    MASK_ROW = MASK
    if HAS_MASK:
        MASK_ROW = MASK + tb * stride_mb + h * stride_mh + offs_m[:, None] * stride_mq
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    lo = k_begin
    hi = k_end
    full_hi = k_end
    if CAUSAL:
        q_last = tl.minimum(start_m + BLOCK_M, q_end) - 1
        hi = tl.minimum(hi, q_last + delta + 1)
        full_hi = tl.minimum(full_hi, start_m + delta + 1)
    hi = tl.where(start_m < q_end, hi, lo)
    if HAS_MASK:
        mid = lo
    else:
        mid = lo + tl.maximum(full_hi - lo, 0) // BLOCK_N * BLOCK_N
        mid = tl.minimum(mid, hi)
    for start_n in range(lo, mid, BLOCK_N):
        dq = _bwd_q_block(
            dq, q, do, lse2, dlt, Kh, Vh, MASK_ROW, start_n, offs_m, offs_d,
            stride_kn, stride_vn, stride_mk, q_end, k_end, delta, qk_scale,
            KIND, False, CAUSAL, HAS_MASK, HEAD_DIM, BLOCK_N,
        )
    for start_n in range(mid, hi, BLOCK_N):
        dq = _bwd_q_block(
            dq, q, do, lse2, dlt, Kh, Vh, MASK_ROW, start_n, offs_m, offs_d,
            stride_kn, stride_vn, stride_mk, q_end, k_end, delta, qk_scale,
            KIND, True, CAUSAL, HAS_MASK, HEAD_DIM, BLOCK_N,
        )
    dq = dq * sm_scale
    tl.store(DQ + tb * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqm + offs_d[None, :],
             dq.to(DQ.dtype.element_ty), mask=ok)
