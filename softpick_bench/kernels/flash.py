"""Flash attention for softpick (and softmax, rectified, softmax1): Python API and autograd.

    flash_attention(q, k, v, kind="softpick", causal=True)                 # (B, H, T, D)
    flash_attention(q, k, v, causal=True, key_start=ks, key_end=ke)         # padded batch
    flash_attention(q, k, v, mask=bool_mask)                                # any boolean mask
    flash_attention(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, causal=True) # packed (total, H, D)

Dense layout: q (B, Hq, Q, D), k/v (B, Hkv, K, D), any strides with a unit last stride;
Hq a multiple of Hkv (grouped-query and multi-query attention, never repeated in memory).
Causal masks are bottom-right aligned (query i sees key j iff j <= i + K - Q), the
alignment a KV cache needs. Masked keys never count in any denominator; a query row
that sees no key gives zeros. Nothing of size Q x K is ever allocated except a mask
the caller passes in.

The forward saves LSE = m + log(l + eps) (natural log, m = max(0, rowmax) for softpick),
one float32 per query row and head; `return_lse=True` also returns it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from softpick_bench.errors import SoftpickBenchError
from softpick_bench.kernels.flash_bwd import flash_bwd_delta_kernel, flash_bwd_dkdv_kernel, flash_bwd_dq_kernel
from softpick_bench.kernels.flash_fwd import KIND_IDS, LOG2E, flash_fwd_kernel
from softpick_bench.kernels.reference import SOFTPICK_EPS


class UnsupportedAttentionError(SoftpickBenchError, ValueError):
    """The flash kernel cannot run these inputs; the message says which and what is valid."""


@dataclass(frozen=True)
class FlashConfig:
    """Tile shapes and launch parameters (forward; backward dK/dV; backward dQ)."""

    fwd_m: int = 128
    fwd_n: int = 64
    fwd_warps: int = 4
    fwd_stages: int = 3
    kv_m: int = 32
    kv_n: int = 128
    kv_warps: int = 4
    kv_stages: int = 3
    dq_m: int = 128
    dq_n: int = 32
    dq_warps: int = 4
    dq_stages: int = 3
    # Forward variants (notes/kernel.md, v3): K/V through tensor descriptors (TMA), relu done by
    # the bf16/fp16 conversion, lazy rescaling, masked softpick scores set to 0. All False: v2.
    fwd_tma: bool = False
    fwd_relu_cvt: bool = False
    fwd_lazy: bool = False
    fwd_zmask: bool = False
    fwd_maxnreg: int | None = None  # register cap per thread (more programs per SM), None: compiler's choice


# Forward kernel versions (notes/kernel.md); the benchmark times them side by side in one run.
FWD_VARIANTS: dict[str, dict[str, bool]] = {
    "v2": {},
    "v3": {"fwd_tma": True, "fwd_relu_cvt": True, "fwd_zmask": True},
    "v3-ptr": {"fwd_relu_cvt": True, "fwd_zmask": True},  # v3 with pointer loads (no per-program descriptors)
    "v3-lazy": {"fwd_tma": True, "fwd_relu_cvt": True, "fwd_zmask": True, "fwd_lazy": True},
}


def default_config(head_dim: int, q_len: int) -> FlashConfig:
    """Tiles measured fastest on an H100 by `benchmarks/attention.py --sweep` (notes/kernel.md)."""
    if q_len <= 16:  # decoding: one query block, memory-bound on K/V
        return FlashConfig(fwd_m=16, fwd_n=128 if head_dim <= 128 else 64, fwd_warps=4, fwd_stages=2)
    if head_dim <= 64:
        # device run 4's sweep winner (the committed table's config); v2 at 64x64x3 stages was within noise
        return FlashConfig(fwd_m=64, fwd_n=64, fwd_warps=4, fwd_stages=2, fwd_maxnreg=128, **FWD_VARIANTS["v3"],
                           kv_m=16, kv_n=128, kv_warps=4, kv_stages=4, dq_m=64, dq_n=64, dq_warps=4, dq_stages=3)
    if head_dim <= 128:  # 128 registers: 2 programs per SM instead of 1 (+7% at T4096 in run 3, +15% in run 4)
        return FlashConfig(fwd_m=128, fwd_n=64, fwd_warps=8, fwd_stages=2, fwd_maxnreg=128, **FWD_VARIANTS["v3"],
                           kv_m=32, kv_n=64, kv_warps=4, kv_stages=3, dq_m=128, dq_n=32, dq_warps=8, dq_stages=3)
    return FlashConfig(fwd_m=64, fwd_n=32, fwd_warps=4, fwd_stages=2,
                       kv_m=32, kv_n=64, kv_warps=4, kv_stages=2, dq_m=64, dq_n=32, dq_warps=4, dq_stages=2)


_CONFIG_OVERRIDE: FlashConfig | None = None
_POISON = False


def set_poison(on: bool) -> None:
    """Fill every buffer the kernels must write with NaN first (tests: proves each element is written)."""
    global _POISON
    _POISON = on


def _new(like: torch.Tensor, zero: bool = False, **kw) -> torch.Tensor:
    if zero:
        return torch.zeros_like(like, **kw)
    out = torch.empty_like(like, **kw)
    return out.fill_(float("nan")) if _POISON else out


def set_config_override(config: FlashConfig | None) -> None:
    """Force one config for every call (tests with small tiles, benchmark sweeps); None restores defaults."""
    global _CONFIG_OVERRIDE
    _CONFIG_OVERRIDE = config


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kind: str) -> None:
    if kind not in KIND_IDS:
        raise UnsupportedAttentionError(f"unknown attention kind {kind!r}; valid: {', '.join(KIND_IDS)}")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise UnsupportedAttentionError(
            f"flash attention needs q, k, v of one dtype among float16, bfloat16, float32; got {q.dtype}, {k.dtype}, {v.dtype}"
        )
    if not (q.device == k.device == v.device):
        raise UnsupportedAttentionError(f"q, k, v on different devices: {q.device}, {k.device}, {v.device}")
    d = q.shape[-1]
    if d > 256 or k.shape[-1] != d or v.shape[-1] != d:
        raise UnsupportedAttentionError(f"head dims must match and be <= 256; got q {d}, k {k.shape[-1]}, v {v.shape[-1]}")


class _TmaScratch:
    """Global memory for the kernel's on-device tensor descriptors (triton.set_allocator)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, size: int, alignment: int, stream: int | None) -> torch.Tensor:
        return torch.empty(size, dtype=torch.int8, device=self.device)


def _tma_ok(k: torch.Tensor, v: torch.Tensor, d: int, block_d: int) -> bool:
    """Tensor descriptors need 16-byte aligned bases and row/head/batch strides, and a full head dim."""
    if d != block_d:
        return False
    esz = k.element_size()
    return all(t.data_ptr() % 16 == 0 and all(st * esz % 16 == 0 for st in t.stride()[:3]) for t in (k, v))


def _unit_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _dense_meta(b: int, q_len: int, k_len: int, key_start: torch.Tensor | None, key_end: torch.Tensor | None,
                device: torch.device) -> tuple[torch.Tensor, bool]:
    """Per-sequence table (tb, q_begin, q_end, k_begin, k_end, delta); and whether keys are partial."""
    meta = torch.empty(b, 6, dtype=torch.int32, device=device)
    meta[:, 0] = torch.arange(b, device=device, dtype=torch.int32)
    meta[:, 1] = 0
    meta[:, 2] = q_len
    meta[:, 3] = 0 if key_start is None else key_start.to(device=device, dtype=torch.int32)
    meta[:, 4] = k_len if key_end is None else key_end.to(device=device, dtype=torch.int32)
    meta[:, 5] = k_len - q_len
    return meta, key_start is not None or key_end is not None


def _varlen_meta(cu_q: torch.Tensor, cu_k: torch.Tensor, device: torch.device) -> torch.Tensor:
    cu_q = cu_q.to(device=device, dtype=torch.int32)
    cu_k = cu_k.to(device=device, dtype=torch.int32)
    s = cu_q.numel() - 1
    meta = torch.empty(s, 6, dtype=torch.int32, device=device)
    meta[:, 0] = 0
    meta[:, 1] = cu_q[:-1]
    meta[:, 2] = cu_q[1:]
    meta[:, 3] = cu_k[:-1]
    meta[:, 4] = cu_k[1:]
    meta[:, 5] = cu_k[1:] - cu_q[1:]  # bottom-right alignment within each sequence
    return meta


def _strides3(*tensors: torch.Tensor) -> tuple[int, ...]:
    """Batch, head and row strides of each (B, H, T, D) tensor, flattened for a kernel launch."""
    return tuple(st for t in tensors for st in t.stride()[:3])


def _mask_args(mask: torch.Tensor | None, device: torch.device) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    if mask is None:
        return torch.empty(1, dtype=torch.uint8, device=device), (0, 0, 0, 0)
    return mask, tuple(mask.stride())  # type: ignore[return-value]


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, meta, mask, kind_id, causal, scale, max_q, max_k, partial_keys, config):
        # q (Bt, Hq, Tq, D), k/v (Bt, Hkv, Tk, D) views; mask uint8 (Bt, Hq, Tq, Tk) or None
        bt, hq, tq, d = q.shape
        hkv = k.shape[1]
        n_seq = meta.shape[0]
        block_d = max(16, triton.next_power_of_2(d))
        o = _new(q)
        lse = _new(torch.empty(bt, hq, tq, dtype=torch.float32, device=q.device))
        mask_t, ms = _mask_args(mask, q.device)
        n_mb = triton.cdiv(max_q, config.fwd_m)
        tma = config.fwd_tma and _tma_ok(k, v, d, block_d)
        if tma:
            triton.set_allocator(_TmaScratch(q.device))  # per call: the allocator is a context variable
        flash_fwd_kernel[(n_seq * hq, n_mb)](
            q, k, v, o, lse, meta, mask_t, *_strides3(q, k, v, o),
            lse.stride(0), lse.stride(1),
            *ms,
            hq, hq // hkv, scale * LOG2E, SOFTPICK_EPS, n_mb,
            KIND=kind_id, CAUSAL=causal, HAS_MASK=mask is not None, STORE_LSE=True,
            HEAD_DIM=d, BLOCK_D=block_d, BLOCK_M=config.fwd_m, BLOCK_N=config.fwd_n,
            TMA=tma, RELU_CVT=config.fwd_relu_cvt and q.is_cuda and q.dtype in (torch.bfloat16, torch.float16),
            LAZY=config.fwd_lazy, ZMASK=config.fwd_zmask,
            num_warps=config.fwd_warps, num_stages=config.fwd_stages,
            **({"maxnreg": config.fwd_maxnreg} if config.fwd_maxnreg else {}),
        )
        ctx.save_for_backward(q, k, v, o, lse, meta, mask)
        ctx.args = (kind_id, causal, scale, max_q, max_k, partial_keys, config)
        ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    def backward(ctx, do, _dlse):
        q, k, v, o, lse, meta, mask = ctx.saved_tensors
        kind_id, causal, scale, max_q, max_k, partial_keys, config = ctx.args
        do = _unit_last(do)
        hq, d = q.shape[1], q.shape[3]
        hkv = k.shape[1]
        n_seq = meta.shape[0]
        block_d = max(16, triton.next_power_of_2(d))
        delta = _new(lse)
        flash_bwd_delta_kernel[(n_seq * hq, triton.cdiv(max_q, 64))](
            o, do, delta, meta, *_strides3(o, do),
            lse.stride(0), lse.stride(1), hq,
            HEAD_DIM=d, BLOCK_D=block_d, BLOCK_M=64,
        )
        mask_t, ms = _mask_args(mask, q.device)
        dq, dk, dv = _new(q), _new(k, zero=partial_keys), _new(v, zero=partial_keys)
        common = {"KIND": kind_id, "CAUSAL": causal, "HAS_MASK": mask is not None, "HEAD_DIM": d, "BLOCK_D": block_d}
        flash_bwd_dkdv_kernel[(n_seq * hkv, triton.cdiv(max_k, config.kv_n))](
            q, k, v, do, dk, dv, lse, delta, meta, mask_t, *_strides3(q, k, v, do, dk, dv),
            lse.stride(0), lse.stride(1), *ms,
            hkv, hq // hkv, scale * LOG2E, scale,
            BLOCK_M=config.kv_m, BLOCK_N=config.kv_n, num_warps=config.kv_warps, num_stages=config.kv_stages,
            **common,
        )
        n_mb = triton.cdiv(max_q, config.dq_m)
        flash_bwd_dq_kernel[(n_seq * hq, n_mb)](
            q, k, v, do, dq, lse, delta, meta, mask_t, *_strides3(q, k, v, do, dq),
            lse.stride(0), lse.stride(1), *ms,
            hq, hq // hkv, scale * LOG2E, scale, n_mb,
            BLOCK_M=config.dq_m, BLOCK_N=config.dq_n, num_warps=config.dq_warps, num_stages=config.dq_stages,
            **common,
        )
        return dq, dk, dv, None, None, None, None, None, None, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kind: str = "softpick",
    causal: bool = False,
    scale: float | None = None,
    *,
    key_start: torch.Tensor | None = None,
    key_end: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    cu_seqlens_q: torch.Tensor | None = None,
    cu_seqlens_k: torch.Tensor | None = None,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
    return_lse: bool = False,
):
    """Attention without a Q x K buffer; differentiable in q, k, v.

    Dense: q (B, Hq, Q, D), k/v (B, Hkv, K, D). `key_start`/`key_end` (B,) integer tensors
    restrict batch b to keys [key_start[b], key_end[b]) (left/right padding); `mask` is any
    boolean mask broadcastable to (B, Hq, Q, K), True = attend (read tile by tile, slower).
    Packed: q (total_q, Hq, D), k/v (total_k, Hkv, D) with int32 cumulative offsets
    cu_seqlens_q/k of length S + 1 starting at 0 and ending at total.
    Returns out (q's shape and dtype), and LSE if `return_lse` ((B, Hq, Q) or (Hq, total_q)).
    """
    _check_inputs(q, k, v, kind)
    d = q.shape[-1]
    scale = d**-0.5 if scale is None else float(scale)
    varlen = cu_seqlens_q is not None or cu_seqlens_k is not None
    if varlen:
        if cu_seqlens_q is None or cu_seqlens_k is None:
            raise UnsupportedAttentionError("packed attention needs both cu_seqlens_q and cu_seqlens_k")
        if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
            raise UnsupportedAttentionError(f"packed attention takes (total, H, D) tensors; got q {tuple(q.shape)}")
        if mask is not None or key_start is not None or key_end is not None:
            raise UnsupportedAttentionError("packed attention takes no mask/key_start/key_end: cu_seqlens say it all")
        if max_seqlen_q is None:
            max_seqlen_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max().item())
        if max_seqlen_k is None:
            max_seqlen_k = int((cu_seqlens_k[1:] - cu_seqlens_k[:-1]).max().item())
        meta = _varlen_meta(cu_seqlens_q, cu_seqlens_k, q.device)
        q4, k4, v4 = (_unit_last(x).unsqueeze(0).transpose(1, 2) for x in (q, k, v))
        partial = False
        mask_u8 = None
    else:
        if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
            raise UnsupportedAttentionError(f"dense attention takes (B, H, T, D) tensors; got q {tuple(q.shape)}")
        b, hq, q_len, _ = q.shape
        k_len = k.shape[2]
        if k.shape[0] != b or v.shape[:3] != k.shape[:3]:
            raise UnsupportedAttentionError(f"batch/shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
        max_seqlen_q, max_seqlen_k = q_len, k_len
        meta, partial = _dense_meta(b, q_len, k_len, key_start, key_end, q.device)
        q4, k4, v4 = (_unit_last(x) for x in (q, k, v))
        mask_u8 = None
        if mask is not None:
            if mask.dtype != torch.bool:
                raise UnsupportedAttentionError(f"mask must be boolean (True = attend), got {mask.dtype}")
            try:
                mask_u8 = mask.expand(b, hq, q_len, k_len).view(torch.uint8)
            except RuntimeError as err:
                raise UnsupportedAttentionError(
                    f"mask {tuple(mask.shape)} does not broadcast to {(b, hq, q_len, k_len)}") from err
    hq, hkv = q4.shape[1], k4.shape[1]
    if hq % hkv:
        raise UnsupportedAttentionError(f"query heads ({hq}) must be a multiple of key/value heads ({hkv})")
    config = _CONFIG_OVERRIDE or default_config(d, max_seqlen_q)
    o4, lse = _FlashAttention.apply(q4, k4, v4, meta, mask_u8, KIND_IDS[kind], bool(causal), scale,
                                    max_seqlen_q, max_seqlen_k, partial, config)
    if varlen:
        out = o4.transpose(1, 2).squeeze(0)
        lse = lse.squeeze(0)
    else:
        out = o4
    return (out, lse) if return_lse else out


def flash_flops(b: int, h: int, q_len: int, k_len: int, d: int, causal: bool) -> float:
    """Forward FLOPs by the usual convention (two matmuls; half of them under a causal mask)."""
    f = 4.0 * b * h * q_len * k_len * d
    return f / 2 if causal else f


__all__ = ["FWD_VARIANTS", "FlashConfig", "UnsupportedAttentionError", "default_config", "flash_attention", "flash_flops",
           "set_config_override", "set_poison"]
