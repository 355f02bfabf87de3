"""Triton forward kernel: flash attention parametrised by the normalisation.

One source for softmax, softpick, rectified and softmax1 (reference.py), so speed
comparisons between them are like for like. Scores live in the log2 domain
(s2 = s * log2(e)) so every exponential is an exp2.

Online recurrence per query row (PAPER.md section 1), running max m starting at 0
(the reference's shift c = max(0, rowmax)), m = -inf-like for plain softmax:

    e = exp2(s2 - m), z = exp2(-m)
    softpick:  p = relu(e - z),  l += sum |e - z|     (valid keys only)
    rectified: p = relu(e - z),  l += sum p
    softmax:   p = e,            l += sum p           (softmax1: l starts at z = 1)
    on growth of m: acc, l *= exp2(m_old - m_new)     (exact: every term scales alike)
    out = acc / (l + eps)  (softpick, rectified; eps added after the shift, as in the reference)
    out = acc / l          (softmax, softmax1)

The kernel stores LSE = m * ln2 + log(l [+ eps]) in natural-log units; the backward
rebuilds E = exp(S - LSE) and P from it (flash_bwd.py).

Sequences are described by a (S, 6) int32 table META: tensor batch index, query rows
[q_begin, q_end), valid key rows [k_begin, k_end), and delta, the causal offset
(key row j is visible from query row i iff j <= i + delta: bottom-right alignment).
Padded batches and packed variable-length batches use the same kernel.
"""

from __future__ import annotations

import triton
import triton.language as tl

KIND_SOFTMAX: int = 0
KIND_SOFTPICK: int = 1
KIND_RECTIFIED: int = 2
KIND_SOFTMAX1: int = 3
KIND_IDS = {"softmax": KIND_SOFTMAX, "softpick": KIND_SOFTPICK, "rectified": KIND_RECTIFIED, "softmax1": KIND_SOFTMAX1}

LN2: float = 0.6931471805599453
LOG2E: float = 1.4426950408889634


LAZY_TH: tl.constexpr = tl.constexpr(8.0)  # log2 units: stale-max scores reach at most 2**8


@triton.jit
def _relu_cvt(c, dtype: tl.constexpr):
    """max(c, 0) rounded to bf16/fp16 by the conversion instruction itself (one op per two scores)."""
    if dtype == tl.bfloat16:
        return tl.inline_asm_elementwise("cvt.rn.relu.bf16x2.f32 $0, $2, $1;", "=r,f,f", [c],
                                         dtype=tl.bfloat16, is_pure=True, pack=2)
    else:
        return tl.inline_asm_elementwise("cvt.rn.relu.f16x2.f32 $0, $2, $1;", "=r,f,f", [c],
                                         dtype=tl.float16, is_pure=True, pack=2)


@triton.jit
def _fwd_block(
    acc, l_i, m_i, q, K, V, MASK_ROW, start_n, offs_m, offs_d,
    stride_kn, stride_vn, stride_mk, q_end, k_end, delta, qk_scale,
    KIND: tl.constexpr, MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr,
    EVEN_D: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
    TMA: tl.constexpr, RELU_CVT: tl.constexpr, LAZY: tl.constexpr, ZMASK: tl.constexpr,
):
    """Fold one block of BLOCK_N keys into the running (acc, l, m) of a query block.

    TMA: K and V are tensor descriptors (rows past k_end read as zeros), else pointers.
    RELU_CVT: softpick's relu is done by the bf16/fp16 conversion instruction (cvt.rn.relu).
    LAZY: the running max moves (and acc, l are rescaled) only when some row's max grew by
    more than LAZY_TH (log2 units); scores then exceed the stale max by at most that much.
    ZMASK: masked scores of softpick/rectified become 0 instead of -inf (c = 0 exactly), one
    compare and one select per score on causal blocks.
    """
    offs_n = start_n + tl.arange(0, BLOCK_N)
    if MASKED:
        n_ok = offs_n < k_end
    if TMA:
        kt = K.load([start_n, 0]).T
        v = V.load([start_n, 0])
    elif MASKED:
        kt_ptrs = K + offs_n[None, :] * stride_kn + offs_d[:, None]
        v_ptrs = V + offs_n[:, None] * stride_vn + offs_d[None, :]
        if EVEN_D:
            kt = tl.load(kt_ptrs, mask=n_ok[None, :], other=0.0)
            v = tl.load(v_ptrs, mask=n_ok[:, None], other=0.0)
        else:
            d_ok = offs_d < HEAD_DIM
            kt = tl.load(kt_ptrs, mask=n_ok[None, :] & d_ok[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=n_ok[:, None] & d_ok[None, :], other=0.0)
    else:
        kt_ptrs = K + offs_n[None, :] * stride_kn + offs_d[:, None]
        v_ptrs = V + offs_n[:, None] * stride_vn + offs_d[None, :]
        if EVEN_D:
            kt = tl.load(kt_ptrs)
            v = tl.load(v_ptrs)
        else:
            d_ok = offs_d < HEAD_DIM
            kt = tl.load(kt_ptrs, mask=d_ok[:, None], other=0.0)
            v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
    # Raw scores; the scale is folded into the exponent's FFMA (qk_scale > 0 keeps the max).
    s2 = tl.dot(q, kt)
    if MASKED:
        if CAUSAL and ZMASK:  # one compare per score: key < min(row + delta + 1, k_end)
            valid = offs_n[None, :] < tl.minimum(offs_m + delta + 1, k_end)[:, None]
        else:
            valid = n_ok[None, :]
            if CAUSAL:
                valid = valid & (offs_n[None, :] <= offs_m[:, None] + delta)
        if HAS_MASK:
            in_bounds = n_ok[None, :] & (offs_m[:, None] < q_end)
            allowed = tl.load(MASK_ROW + offs_n[None, :] * stride_mk, mask=in_bounds, other=0)
            valid = valid & (allowed != 0)
        if ZMASK and (KIND == 1 or KIND == 2):
            # Score 0 gives e = exp2(-m) = z bit for bit, so c = e - z = 0 exactly: no weight,
            # no denominator term, and m >= 0 already, so the max is unchanged.
            s2 = tl.where(valid, s2, 0.0)
        else:
            s2 = tl.where(valid, s2, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s2, 1) * qk_scale)
    if LAZY:
        # One test per block for the whole query block (a branch, not a select): rescale
        # only when some row's max grew by more than LAZY_TH; otherwise keep the stale max.
        if tl.max(m_new - m_i, 0) > LAZY_TH:
            alpha = tl.exp2(m_i - m_new)
            acc = acc * alpha[:, None]
            l_i = l_i * alpha
            m_i = m_new
        m_new = m_i
    else:
        alpha = tl.exp2(m_i - m_new)
        acc = acc * alpha[:, None]
        l_i = l_i * alpha
    e = tl.exp2(s2 * qk_scale - m_new[:, None])
    if KIND == 1 or KIND == 2:
        z = tl.exp2(-m_new)
        c = e - z[:, None]
        if KIND == 1:
            if RELU_CVT:
                p16 = _relu_cvt(c, v.dtype)
            else:
                p16 = tl.maximum(c, 0.0).to(v.dtype)
            if MASKED and not ZMASK:
                c = tl.where(valid, c, 0.0)  # masked keys never count in the denominator
            l_i = l_i + tl.sum(tl.abs(c), 1)
        else:
            p = tl.maximum(c, 0.0)
            p16 = p.to(v.dtype)
            l_i = l_i + tl.sum(p, 1)
    else:
        p16 = e.to(v.dtype)
        l_i = l_i + tl.sum(e, 1)
    acc = tl.dot(p16, v, acc)
    return acc, l_i, m_new


@triton.jit
def flash_fwd_kernel(
    Q, K, V, O, LSE, META, MASK,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_om,
    stride_lb, stride_lh,
    stride_mb, stride_mh, stride_mq, stride_mk,
    n_heads, group, qk_scale, eps, n_mblocks,
    KIND: tl.constexpr, CAUSAL: tl.constexpr, HAS_MASK: tl.constexpr, STORE_LSE: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    TMA: tl.constexpr = False, RELU_CVT: tl.constexpr = False, LAZY: tl.constexpr = False,
    ZMASK: tl.constexpr = False,
):
    # TMA, RELU_CVT, LAZY, ZMASK: see _fwd_block (all False: the v2 kernel of notes/kernel.md).
    # grid: (sequences * heads, query blocks); heavy (late, causal) query blocks launch first.
    pid_sh = tl.program_id(0)
    pid_m = n_mblocks - 1 - tl.program_id(1)
    seq = pid_sh // n_heads
    h = pid_sh % n_heads
    hk = h // group
    meta = META + seq * 6
    tb = tl.load(meta)
    q_begin = tl.load(meta + 1)
    q_end = tl.load(meta + 2)
    k_begin = tl.load(meta + 3)
    k_end = tl.load(meta + 4)
    delta = tl.load(meta + 5)

    start_m = q_begin + pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    EVEN_D: tl.constexpr = HEAD_DIM == BLOCK_D
    m_ok = offs_m < q_end
    d_ok = offs_d < HEAD_DIM

    q_ptrs = Q + tb.to(tl.int64) * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :]
    q = tl.load(q_ptrs, mask=m_ok[:, None] & d_ok[None, :], other=0.0)
    Kh = K + tb.to(tl.int64) * stride_kb + hk * stride_kh
    Vh = V + tb.to(tl.int64) * stride_vb + hk * stride_vh
    if TMA:  # rows [0, k_end) of this head; the copy engine zero-fills rows past k_end
        Kh = tl.make_tensor_descriptor(Kh, shape=[k_end, HEAD_DIM], strides=[stride_kn, 1],
                                       block_shape=[BLOCK_N, BLOCK_D])
        Vh = tl.make_tensor_descriptor(Vh, shape=[k_end, HEAD_DIM], strides=[stride_vn, 1],
                                       block_shape=[BLOCK_N, BLOCK_D])
    MASK_ROW = MASK
    if HAS_MASK:
        MASK_ROW = MASK + tb.to(tl.int64) * stride_mb + h * stride_mh + offs_m[:, None] * stride_mq

    if KIND == 0:
        m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - 1.0e30
    else:
        m_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    if KIND == 3:
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32) + 1.0  # the "+1" term, exp(-m) at m = 0
    else:
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # Key range: [k_begin, hi). Blocks in [k_begin, mid) are fully visible to every row
    # of this query block (no mask work); [mid, hi) are masked.
    lo = k_begin
    hi = k_end
    full_hi = k_end
    if CAUSAL:
        q_last = tl.minimum(start_m + BLOCK_M, q_end) - 1
        hi = tl.minimum(hi, q_last + delta + 1)
        full_hi = tl.minimum(full_hi, start_m + delta + 1)
    hi = tl.where(start_m < q_end, hi, lo)  # empty query block: no work, nothing stored
    if HAS_MASK:
        mid = lo
    else:
        mid = lo + tl.maximum(full_hi - lo, 0) // BLOCK_N * BLOCK_N
        mid = tl.minimum(mid, hi)
    for start_n in range(lo, mid, BLOCK_N):
        acc, l_i, m_i = _fwd_block(
            acc, l_i, m_i, q, Kh, Vh, MASK_ROW, start_n, offs_m, offs_d,
            stride_kn, stride_vn, stride_mk, q_end, k_end, delta, qk_scale,
            KIND, False, CAUSAL, HAS_MASK, EVEN_D, HEAD_DIM, BLOCK_N, TMA, RELU_CVT, LAZY, ZMASK,
        )
    for start_n in range(mid, hi, BLOCK_N):
        acc, l_i, m_i = _fwd_block(
            acc, l_i, m_i, q, Kh, Vh, MASK_ROW, start_n, offs_m, offs_d,
            stride_kn, stride_vn, stride_mk, q_end, k_end, delta, qk_scale,
            KIND, True, CAUSAL, HAS_MASK, EVEN_D, HEAD_DIM, BLOCK_N, TMA, RELU_CVT, LAZY, ZMASK,
        )

    if KIND == 1 or KIND == 2:
        denom = l_i + eps
    elif KIND == 0:
        denom = tl.where(l_i > 0.0, l_i, 1.0)  # fully masked row: acc = 0, output 0
    else:
        denom = l_i
    out = acc * (1.0 / denom)[:, None]
    o_ptrs = O + tb.to(tl.int64) * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])
    if STORE_LSE:
        lse = m_i * 0.6931471805599453 + tl.log(denom)
        l_ptrs = LSE + tb.to(tl.int64) * stride_lb + h * stride_lh + offs_m
        tl.store(l_ptrs, lse, mask=m_ok)
