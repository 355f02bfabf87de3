"""Apply a whole quant spec to a model: weights first, then the activation-side transforms.

Pipeline: (0) the spec's transforms in order (rotation, smoothing: quant/transforms/),
(1) the weight method, (2) activation fake quantization wrapped around every
quantized linear layer (every target linear layer when the method is "none"), (3) KV and
attention-probability quantizers as attention hooks, (4) one calibration pass that sets
static activation scales and measures every activation-side error. Everything a spec asks
for is either done and proven in the report, or refused with UnsupportedQuantError before
any work; a quantizer that changed nothing is an error.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from softpick_bench.errors import QuantizationNoOpError, UnsupportedQuantError
from softpick_bench.models.attention import AttentionHooks, set_hooks
from softpick_bench.quant.activations import ACT_GRANULARITIES, ActQuantLinear
from softpick_bench.quant.attention_quant import KV_GRANULARITIES, KVQuantizer, ProbsQuantizer
from softpick_bench.quant.base import QuantContext, get_backend, iter_targets, peak_memory, skipped_names
from softpick_bench.quant.calibration import load_calibration
from softpick_bench.quant.format_quant import FormatActQuantLinear, check_act_format
from softpick_bench.quant.modules import replace_module
from softpick_bench.quant.spec import QuantReport, QuantSpec
from softpick_bench.quant.transforms.pipeline import apply_transforms, check_transforms
from softpick_bench.quant.transforms.rotation import head_rotation

ACTIVATION_BITS = frozenset(range(2, 9))
MEASURE_SEQUENCES = 8  # calibration pass for activation scales and measured errors
MEASURE_SEQ_LEN = 512
MEASURE_BATCH = 4


def _check_part(what: str, bits: int | None, granularity: str | None, valid: tuple[str, ...] | None) -> None:
    if bits is None:
        if granularity is not None:
            raise UnsupportedQuantError(f"{what}_granularity {granularity!r} given without {what}_bits")
        return
    if bits not in ACTIVATION_BITS:
        raise UnsupportedQuantError(f"{what}_bits must be one of {sorted(ACTIVATION_BITS)}, got {bits!r}")
    if valid is not None and granularity not in valid:
        raise UnsupportedQuantError(f"{what}_bits needs {what}_granularity, one of {list(valid)} (got {granularity!r})")


def check_spec(spec: QuantSpec, device: str) -> None:
    """Raise UnsupportedQuantError if any part of `spec` cannot run on `device`."""
    if spec.method != "none":
        get_backend(spec.method).check(spec, device)
    elif spec.bits is not None or spec.options:
        raise UnsupportedQuantError(
            f"method 'none' takes no bits or options (got bits={spec.bits}, options={dict(spec.options)})"
        )
    _check_part("act", spec.act_bits, spec.act_granularity, ACT_GRANULARITIES)
    _check_part("kv", spec.kv_bits, spec.kv_granularity, KV_GRANULARITIES)
    _check_part("probs", spec.probs_bits, None, None)
    check_act_format(spec)
    keep = spec.kv_keep_first
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise UnsupportedQuantError(f"kv_keep_first must be a non-negative integer (positions), got {keep!r}")
    if keep and spec.kv_bits is None:
        raise UnsupportedQuantError(f"kv_keep_first {keep} given without kv_bits: nothing to keep in full precision")
    check_transforms(spec, device)


def _kv_quantizer(model: nn.Module, spec: QuantSpec) -> KVQuantizer | None:
    if spec.kv_bits is None:
        return None
    rotation = None
    if any(name == "hadamard" and dict(opts).get("heads", True) for name, opts in spec.transforms):
        cfg = model.config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        rotation = head_rotation(head_dim, torch.float32, next(model.parameters()).device)
    return KVQuantizer(spec.kv_bits, spec.kv_granularity, keep_first=spec.kv_keep_first, key_rotation=rotation)


def _linear_targets(model: nn.Module, spec: QuantSpec) -> list[str]:
    return [name for name, module in iter_targets(model, spec) if isinstance(module, nn.Linear)]


@torch.no_grad()
def _calibration_pass(model: nn.Module, ids: torch.Tensor) -> None:
    device = next(model.parameters()).device
    for start in range(0, ids.shape[0], MEASURE_BATCH):
        model(input_ids=ids[start : start + MEASURE_BATCH].to(device), use_cache=False)


def _measure(
    model, spec, ctx, wrappers: list[ActQuantLinear], kv: KVQuantizer | None, probs: ProbsQuantizer | None
) -> dict:
    """Calibrate static scales, then run once with every meter on; returns the report details."""
    max_pos = getattr(model.config, "max_position_embeddings", None) or MEASURE_SEQ_LEN
    ids, calib = load_calibration(ctx, "activation_side", MEASURE_SEQUENCES, min(MEASURE_SEQ_LEN, max_pos))
    static = [w for w in wrappers if w.granularity == "per_tensor"]
    for w in static:
        w.observing = True
    if static:
        saved_hooks = (kv, probs)
        set_hooks(model, None)  # scales are calibrated on the unquantized attention path's activations
        _calibration_pass(model, ids)
        set_hooks(model, AttentionHooks(kv=saved_hooks[0], probs=saved_hooks[1]) if any(saved_hooks) else None)
    for w in static:
        w.observing = False
    meters = [w.meter for w in wrappers]
    meters += [kv.key_meter, kv.value_meter] if kv else []
    meters += [probs.meter] if probs else []
    for m in meters:
        m.recording = True
    _calibration_pass(model, ids)
    for m in meters:
        m.recording = False
    details: dict = {"activation_side_calibration": calib}
    if wrappers:
        errors = [w.meter.relative() for w in wrappers]
        details["activation"] = {
            "bits": spec.act_bits,
            "granularity": spec.act_granularity,
            "format": spec.act_format,
            "layers": len(wrappers),
            "mean_rel_error": sum(e for e in errors if e is not None) / max(1, sum(e is not None for e in errors)),
            "static_amax": {n: float(w.static_amax) for n, w in _named(model, ActQuantLinear)} if static else None,
        }
    if kv:
        details["kv"] = {
            "bits": spec.kv_bits,
            "granularity": spec.kv_granularity,
            "rel_error_keys": kv.key_meter.relative(),
            "rel_error_values": kv.value_meter.relative(),
            "keep_first": kv.keep_first,
            "keys_in_hadamard_basis": kv.key_rotation is not None,
        }
    if probs:
        details["probs"] = {
            "bits": spec.probs_bits,
            "scale": "per-row max / (2^b - 1)",
            "rel_error": probs.meter.relative(),
            "zeros_kept": probs.zeros_kept,
        }
    return details


def _named(model: nn.Module, cls: type) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, cls)]


def _measured_errors(details: dict) -> dict[str, float | None]:
    out = {}
    if "activation" in details:
        out["activation"] = details["activation"]["mean_rel_error"]
    if "kv" in details:
        out["kv"] = max(details["kv"]["rel_error_keys"] or 0.0, details["kv"]["rel_error_values"] or 0.0)
    if "probs" in details:
        out["probs"] = details["probs"]["rel_error"]
    return out


def quantize(model: nn.Module, spec: QuantSpec, ctx: QuantContext) -> QuantReport:
    """Quantize `model` in place (give it a copy) and return the proof."""
    check_spec(spec, ctx.device)
    if spec.is_baseline:
        raise QuantizationNoOpError(f"quant spec {spec.label()} asks for nothing to be quantized")
    start = time.perf_counter()
    if ctx.device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    transformed = apply_transforms(model, spec, ctx)
    linear_names = _linear_targets(model, spec)

    if spec.method != "none":
        report = get_backend(spec.method).apply(model, spec, ctx)
        if report.layers_quantized == 0:
            raise QuantizationNoOpError(
                f"{spec.label()}: no layer was quantized (skip={list(spec.skip)} left nothing to quantize)"
            )
        if report.mean_rel_weight_error is not None and report.mean_rel_weight_error == 0.0:
            raise QuantizationNoOpError(f"{spec.label()}: quantization left every weight unchanged")
    else:
        skipped = skipped_names(model, spec)
        report = QuantReport(
            method="none",
            layers_quantized=0,
            layers_total=len(linear_names) + len(skipped),
            params_quantized=0,
            mean_rel_weight_error=None,
            effective_bits=None,
            skipped_layers=skipped,
        )

    wrappers: list[ActQuantLinear] = []
    if spec.act_bits is not None:
        for name in linear_names:
            inner = model.get_submodule(name)
            if spec.act_format == "int":
                wrapper = ActQuantLinear(inner, spec.act_bits, spec.act_granularity)
            else:
                wrapper = FormatActQuantLinear(inner, spec.act_bits, spec.act_granularity, spec.act_format)
            replace_module(model, name, wrapper)
            wrappers.append(wrapper)
        if not wrappers:
            raise QuantizationNoOpError(
                f"{spec.label()}: no linear layer to quantize activations of (skip={list(spec.skip)})"
            )
    kv = _kv_quantizer(model, spec)
    probs = ProbsQuantizer(spec.probs_bits) if spec.probs_bits is not None else None
    attention_modules = 0
    if kv or probs:
        attention_modules = set_hooks(model, AttentionHooks(kv=kv, probs=probs))
        if attention_modules == 0:
            raise UnsupportedQuantError(f"{spec.label()}: the model has no attention module to hook")

    if wrappers or kv or probs:
        details = _measure(model, spec, ctx, wrappers, kv, probs)
        for what, error in _measured_errors(details).items():
            if not error:
                raise QuantizationNoOpError(
                    f"{spec.label()}: {what} quantization changed nothing (measured error {error})"
                )
        details["attention_modules_hooked"] = attention_modules
        report.details.update(details)
        if spec.method == "none":
            report.layers_quantized = len(wrappers) or attention_modules
            report.layers_total = report.layers_total if wrappers else attention_modules
    if transformed:
        report.details["transforms"] = transformed
    report.seconds = time.perf_counter() - start
    report.peak_memory_bytes = peak_memory(ctx.device)
    report.details["peak_memory_kind"] = (
        "cuda max allocated" if ctx.device.startswith("cuda") else "process peak RSS (upper bound)"
    )
    report.details["info"] = dict(ctx.info)
    return report
