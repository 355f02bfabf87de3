"""Attention speed on one GPU: Triton flash softpick against torch SDPA and eager softpick.

    PYTHONPATH=. python benchmarks/attention.py [--sweep] [--out results/bench/attention-h100.md]

Causal bf16 prefill shapes, TFLOP/s = 4*B*H*T*T*D/2 / time (forward); forward+backward
counts 3.5x the forward FLOPs. Decode (1 query against a KV cache) in GB/s of K and V
read, next to a device-to-device copy measured in the same run (bytes read + written).
Also peak memory of a forward+backward at T = 16384. This is a benchmark, not a test.
`--sweep` first times candidate tile configs of the Triton kernel per shape and uses
the fastest (the chosen ones are printed); without it the defaults of flash.py run.
"""

from __future__ import annotations

import argparse
import math
import platform
from collections.abc import Callable

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from triton.testing import do_bench

from softpick_bench.kernels import reference
from softpick_bench.kernels.flash import FWD_VARIANTS, FlashConfig, default_config, flash_attention, set_config_override

PREFILL = [(8, 16, 2048, 64), (4, 16, 4096, 128), (2, 16, 8192, 128)]
DECODE = (32, 16, 4096, 128)
# Forward candidates: (version of flash.FWD_VARIANTS, BLOCK_M, BLOCK_N, warps, stages, register cap).
# v2 rows are the previous kernel at its measured tiles, timed in the same run as the new ones.
# A cap of 128 registers fits 4 (D64, 64x64) or 2 (D128, 128x64 x 8 warps) programs per SM
# instead of 3 or 1 (offline sm_90a compile: no spills). Device run 3 timed 26 candidates; this
# list keeps its winners and adds v3-ptr (v3 without tensor descriptors) for D64.
FWD_CANDIDATES = {
    64: [("v2", 64, 64, 4, 3, None), ("v3-ptr", 64, 64, 4, 3, None), ("v3-ptr", 64, 64, 4, 2, 128),
         ("v3-ptr", 64, 64, 4, 3, 128), ("v3", 64, 64, 4, 2, 128)],
    128: [("v2", 128, 64, 8, 3, None), ("v3", 128, 64, 8, 2, 128), ("v3-ptr", 128, 64, 8, 2, 128),
          ("v3-lazy", 128, 64, 8, 2, 128)],
}


def fwd_candidate_config(base: FlashConfig, cand) -> FlashConfig:
    """The FlashConfig of one forward candidate (all forward fields set, backward ones from base)."""
    variant, m, n, w, s, reg = cand
    flags = {f: False for f in ("fwd_tma", "fwd_relu_cvt", "fwd_zmask", "fwd_lazy")} | FWD_VARIANTS[variant]
    return _cfg(base, fwd_m=m, fwd_n=n, fwd_warps=w, fwd_stages=s, fwd_maxnreg=reg, **flags)


KV_CANDIDATES = {
    64: [(32, 128, 4, 3), (64, 128, 8, 3), (64, 64, 4, 3), (32, 64, 4, 4), (16, 128, 4, 4)],
    128: [(32, 128, 8, 3), (64, 128, 8, 2), (64, 64, 4, 3), (32, 64, 4, 3), (16, 128, 8, 3)],
}
DQ_CANDIDATES = {
    64: [(128, 32, 4, 3), (64, 64, 4, 3), (128, 64, 8, 3), (64, 32, 4, 4)],
    128: [(128, 32, 8, 3), (64, 64, 4, 3), (128, 64, 8, 2), (64, 32, 4, 3)],
}
DECODE_CANDIDATES = [(16, 64, 4, 3), (16, 128, 4, 2), (16, 64, 4, 4), (16, 32, 4, 4), (16, 128, 8, 3)]


def ms(fn: Callable[[], object], grads: list[torch.Tensor] | None = None, rep: int = 100) -> float:
    return do_bench(fn, warmup=25, rep=rep, grad_to_none=grads, return_mode="median")


def sdpa(backend: SDPBackend, causal: bool = True):
    def run(q, k, v):
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return run


def triton_kind(kind: str, causal: bool = True):
    return lambda q, k, v: flash_attention(q, k, v, kind=kind, causal=causal)


def eager(q, k, v):
    return reference.attention(q, k, v, kind="softpick", causal=q.shape[2] > 1)


def time_impl(fn, q, k, v, do, backward: bool, rep: int = 100) -> float | str:
    try:
        if not backward:
            with torch.no_grad():
                return ms(lambda: fn(q, k, v), rep=rep)
        return ms(lambda: fn(q, k, v).backward(do), grads=[q, k, v], rep=rep)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return "OOM"
    except Exception as err:  # noqa: BLE001 -- an SDPA backend that refuses a shape: record why, keep going
        torch.cuda.empty_cache()
        return f"n/a ({type(err).__name__})"


def inputs(b: int, h: int, t_q: int, t_k: int, d: int, grad: bool = True):
    q = torch.randn(b, h, t_q, d, device="cuda", dtype=torch.bfloat16, requires_grad=grad)
    k = torch.randn(b, h, t_k, d, device="cuda", dtype=torch.bfloat16, requires_grad=grad)
    v = torch.randn(b, h, t_k, d, device="cuda", dtype=torch.bfloat16, requires_grad=grad)
    return q, k, v, torch.randn(b, h, t_q, d, device="cuda", dtype=torch.bfloat16)


def _cfg(base: FlashConfig, **kw) -> FlashConfig:
    return FlashConfig(**{**base.__dict__, **kw})


def _try(fn) -> float:
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 -- out of shared memory and the like: not a candidate
        print(f"    skipped ({type(err).__name__}: {str(err)[:80]})")
        return math.inf


def sweep_prefill(shape, log, fwd_table: list[str], bwd: bool = True) -> FlashConfig:
    b, h, t, d = shape
    q, k, v, do = inputs(b, h, t, t, d)
    flops = 4 * b * h * t * t * d / 2
    best = default_config(d, t)
    times = {}
    for cand in FWD_CANDIDATES[d]:
        set_config_override(fwd_candidate_config(best, cand))
        with torch.no_grad():
            times[cand] = _try(lambda: ms(lambda: flash_attention(q, k, v, causal=True)))
        tf = "-" if math.isinf(times[cand]) else f"{flops / (times[cand] * 1e-3) / 1e12:.1f}"
        log(f"  fwd {shape} {cand}: {times[cand]:.3f} ms ({tf} TFLOP/s)")
        fwd_table.append(f"| B{b} H{h} T{t} D{d} | {cand[0]} | {cand[1]}x{cand[2]}, {cand[3]} warps, {cand[4]} stages, "
                         f"regs {cand[5] or 'auto'} | {times[cand]:.3f} | {tf} |")
    best = fwd_candidate_config(best, min(times, key=times.get))
    set_config_override(None)
    if not bwd:
        return best
    for field, cands in (("kv", KV_CANDIDATES[d]), ("dq", DQ_CANDIDATES[d])):
        times = {}
        for m, n, w, s in cands:
            set_config_override(_cfg(best, **{f"{field}_m": m, f"{field}_n": n, f"{field}_warps": w, f"{field}_stages": s}))
            times[(m, n, w, s)] = _try(lambda: ms(lambda: flash_attention(q, k, v, causal=True).backward(do), grads=[q, k, v]))
            log(f"  fwd+bwd {shape} {field} {(m, n, w, s)}: {times[(m, n, w, s)]:.3f} ms")
        m, n, w, s = min(times, key=times.get)
        best = _cfg(best, **{f"{field}_m": m, f"{field}_n": n, f"{field}_warps": w, f"{field}_stages": s})
    set_config_override(None)
    return best


def sweep_decode(log) -> FlashConfig:
    b, h, t, d = DECODE
    q, k, v, _ = inputs(b, h, 1, t, d, grad=False)
    times = {}
    for m, n, w, s in DECODE_CANDIDATES:
        set_config_override(FlashConfig(fwd_m=m, fwd_n=n, fwd_warps=w, fwd_stages=s))
        times[(m, n, w, s)] = _try(lambda: ms(lambda: flash_attention(q, k, v, causal=True)))
        log(f"  decode {(m, n, w, s)}: {times[(m, n, w, s)]:.4f} ms")
    m, n, w, s = min(times, key=times.get)
    set_config_override(None)
    return FlashConfig(fwd_m=m, fwd_n=n, fwd_warps=w, fwd_stages=s)


def copy_bandwidth() -> float:
    x = torch.randn(2**28, device="cuda")  # 1 GiB
    y = torch.empty_like(x)
    t = ms(lambda: y.copy_(x))
    return 2 * x.numel() * 4 / (t * 1e-3) / 1e9


def peak_memory(t: int = 16384, b: int = 1, h: int = 16, d: int = 128) -> list[str]:
    rows = []
    for name, fn in (("triton softpick", triton_kind("softpick")), ("sdpa flash", sdpa(SDPBackend.FLASH_ATTENTION))):
        q, k, v, do = inputs(b, h, t, t, d)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn(q, k, v).backward(do)
        torch.cuda.synchronize()
        extra = (torch.cuda.max_memory_allocated() - base) / 2**20
        rows.append(f"| {name} | B{b} H{h} T{t} D{d} causal fwd+bwd | {base / 2**20:.0f} MiB | {extra:.0f} MiB |")
        del q, k, v, do
    scores = b * h * t * t * 4 / 2**30
    rows.append(f"| eager softpick (not run) | one float32 T x T score tensor alone | - | {scores:.1f} GiB |")
    return rows


def fmt(x: float | str, unit: float) -> str:
    return x if isinstance(x, str) else f"{unit / (x * 1e-3) / 1e12:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--fwd-sweep-only", action="store_true", help="with --sweep: backward tiles stay the defaults")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    lines: list[str] = []

    def log(s: str) -> None:
        print(s, flush=True)

    torch.manual_seed(0)
    props = torch.cuda.get_device_properties(0)
    head = (f"GPU: {props.name} ({props.multi_processor_count} SMs), torch {torch.__version__}, "
            f"triton {triton.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
            f"python {platform.python_version()}")
    log(head)
    chosen: dict[object, FlashConfig] = {}
    fwd_table: list[str] = []
    if args.sweep:
        for shape in PREFILL:
            chosen[shape] = sweep_prefill(shape, log, fwd_table, bwd=not args.fwd_sweep_only)
            log(f"best {shape}: {chosen[shape]}")
        chosen[DECODE] = sweep_decode(log)
        log(f"best decode: {chosen[DECODE]}")

    impls = [("triton softpick", triton_kind("softpick")), ("triton softmax", triton_kind("softmax")),
             ("sdpa flash", sdpa(SDPBackend.FLASH_ATTENTION)), ("sdpa cudnn", sdpa(SDPBackend.CUDNN_ATTENTION)),
             ("eager softpick", eager)]
    lines += ["| shape (causal, bf16) | implementation | fwd TFLOP/s | fwd+bwd TFLOP/s |", "|---|---|---|---|"]
    results: dict[tuple, dict[str, tuple]] = {}
    for shape in PREFILL:
        b, h, t, d = shape
        set_config_override(chosen.get(shape))
        q, k, v, do = inputs(b, h, t, t, d)
        flops = 4 * b * h * t * t * d / 2
        results[shape] = {}
        for name, fn in impls:
            rep = 10 if name.startswith("eager") else 100
            f = time_impl(fn, q, k, v, do, backward=False, rep=rep)
            fb = time_impl(fn, q, k, v, do, backward=True, rep=rep)
            results[shape][name] = (f, fb)
            row = f"| B{b} H{h} T{t} D{d} | {name} | {fmt(f, flops)} | {fmt(fb, 3.5 * flops)} |"
            lines.append(row)
            log(row)
        del q, k, v, do
        torch.cuda.empty_cache()
    set_config_override(None)

    bw = copy_bandwidth()
    b, h, t, d = DECODE
    set_config_override(chosen.get(DECODE))
    q, k, v, _ = inputs(b, h, 1, t, d, grad=False)
    kv_bytes = 2 * b * h * t * d * 2
    lines += ["", (f"Decode B{b} H{h}, 1 query, {t} keys, D{d} (bf16); device-to-device copy measured now: "
                   f"{bw:.0f} GB/s (read + written)."), "",
              "| implementation | time (us) | GB/s of K,V read | % of copy bandwidth |", "|---|---|---|---|"]
    dec = {}
    for name, fn in [("triton softpick", triton_kind("softpick")), ("triton softmax", triton_kind("softmax")),
                     ("sdpa flash", sdpa(SDPBackend.FLASH_ATTENTION, causal=False)),
                     ("sdpa cudnn", sdpa(SDPBackend.CUDNN_ATTENTION, causal=False)), ("eager softpick", eager)]:
        tm = time_impl(fn, q, k, v, None, backward=False)
        dec[name] = tm
        if isinstance(tm, str):
            lines.append(f"| {name} | {tm} | - | - |")
        else:
            gbs = kv_bytes / (tm * 1e-3) / 1e9
            lines.append(f"| {name} | {tm * 1e3:.1f} | {gbs:.0f} | {100 * gbs / bw:.0f}% |")
        log(lines[-1])
    set_config_override(None)
    del q, k, v
    torch.cuda.empty_cache()

    lines += ["", "Peak memory above the inputs (torch.cuda.max_memory_allocated):", "",
              "| implementation | shape | inputs | peak extra |", "|---|---|---|---|"]
    lines += peak_memory()

    lines += ["", "Ratios, Triton softpick over the others (time ratio, > 1 = softpick faster):", "",
              "| shape | fwd vs flash | fwd vs cuDNN | fwd+bwd vs flash | fwd+bwd vs cuDNN | fwd vs triton softmax |",
              "|---|---|---|---|---|---|"]
    for shape, r in results.items():
        sp = r["triton softpick"]

        def ratio(other, i, sp=sp):
            o = other[i]
            return "-" if isinstance(o, str) or isinstance(sp[i], str) else f"{o / sp[i]:.2f}"
        lines.append(f"| {shape} | {ratio(r['sdpa flash'], 0)} | {ratio(r['sdpa cudnn'], 0)} | "
                     f"{ratio(r['sdpa flash'], 1)} | {ratio(r['sdpa cudnn'], 1)} | {ratio(r['triton softmax'], 0)} |")
    if fwd_table:
        lines += ["", "Forward versions and tiles (same run; median ms, TFLOP/s):", "",
                  "| shape | version | tiles | ms | TFLOP/s |", "|---|---|---|---|---|"] + fwd_table
    if chosen:
        lines += ["", "Tile configs chosen by --sweep:", ""] + [f"- {s}: {c}" for s, c in chosen.items()]
    text = "\n".join([head, ""] + lines) + "\n"
    print("\n" + text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
