"""SmoothQuant: move activation outliers into the weights with per-channel scales, exactly.

For a linear layer's input channel j, s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha), from
calibration activations; X_j is divided by s_j where it is produced and W_:,j multiplied
by s_j, so the product is unchanged:
- q/k/v and gate/up: the division folds into the RMSNorm weight before them;
- down_proj: into up_proj's rows (silu(gate) * up / s is elementwise), unless down_proj's
  input is rotated online (hadamard first): the channels are then mixed, so it is left alone;
- o_proj: into v_proj's rows (attention output is linear in v for every attention kind);
  with grouped KV heads the q heads sharing a KV head share one scale (max over the group).
Calibration is the seeded Gutenberg windows GPTQ uses (quant/calibration.py).
"""

from __future__ import annotations

import torch
from torch import nn

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.quant.calibration import load_calibration
from softpick_bench.quant.transforms.base import Transform, register_transform
from softpick_bench.quant.transforms.layout import llama_layout

DEFAULTS = {"alpha": 0.5, "nsamples": 16, "seq_len": 256}
BATCH = 4


def smoothing_scales(act_max: torch.Tensor, weight_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = act_max^alpha / weight_max^(1 - alpha); 1 where a channel never fired or has no weight."""
    s = act_max.clamp_min(1e-5).pow(alpha) / weight_max.clamp_min(1e-5).pow(1 - alpha)
    return torch.where((act_max > 0) & (weight_max > 0), s, torch.ones_like(s))


@torch.no_grad()
def _input_maxima(model: nn.Module, modules: dict[str, nn.Module], ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-channel max |input| of each module over the calibration batch."""
    maxima: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(_module, args):
            m = args[0].detach().abs().float().reshape(-1, args[0].shape[-1]).amax(dim=0)
            maxima[name] = m if name not in maxima else torch.maximum(maxima[name], m)

        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    try:
        device = next(model.parameters()).device
        for start in range(0, ids.shape[0], BATCH):
            model(input_ids=ids[start : start + BATCH].to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return maxima


def _scale_columns(lin: nn.Linear, s: torch.Tensor) -> None:
    lin.weight.data = (lin.weight.data.float() * s).to(lin.weight.dtype)


def _scale_rows(lin: nn.Linear, s: torch.Tensor) -> None:
    lin.weight.data = (lin.weight.data.float() / s[:, None]).to(lin.weight.dtype)
    if lin.bias is not None:
        lin.bias.data = (lin.bias.data.float() / s).to(lin.bias.dtype)


@register_transform
class SmoothQuant(Transform):
    name = "smoothquant"
    description = "per-channel smoothing of linear inputs into weights (SmoothQuant), calibrated"
    options = {
        "alpha": "migration strength in [0, 1] (default 0.5)",
        "nsamples": "calibration windows (default 16)",
        "seq_len": "tokens per calibration window (default 256)",
    }

    def check(self, opts, spec, device) -> None:
        super().check(opts, spec, device)
        alpha = opts.get("alpha", DEFAULTS["alpha"])
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise UnsupportedQuantError(f"smoothquant alpha must be a number in [0, 1], got {alpha!r}")
        for k in ("nsamples", "seq_len"):
            v = opts.get(k, DEFAULTS[k])
            if isinstance(v, bool) or not isinstance(v, int) or v < (2 if k == "seq_len" else 1):
                raise UnsupportedQuantError(f"smoothquant {k} must be a positive integer, got {v!r}")
        if spec.act_bits is None:
            raise UnsupportedQuantError("smoothquant only helps activation quantization: set act_bits (W8A8, W4A8)")

    @torch.no_grad()
    def apply(self, model, opts, spec, ctx) -> dict:
        lay = llama_layout(model, "smoothquant")
        alpha = float(opts.get("alpha", DEFAULTS["alpha"]))
        max_pos = getattr(model.config, "max_position_embeddings", None) or DEFAULTS["seq_len"]
        seq_len = min(int(opts.get("seq_len", DEFAULTS["seq_len"])), max_pos)
        ids, calib = load_calibration(ctx, "smoothquant", int(opts.get("nsamples", DEFAULTS["nsamples"])), seq_len)
        watched = {}
        for i, layer in enumerate(lay.layers):
            watched[f"{i}.qkv"] = layer.self_attn.q_proj
            watched[f"{i}.o"] = layer.self_attn.o_proj
            watched[f"{i}.gate_up"] = layer.mlp.gate_proj
            if isinstance(layer.mlp.down_proj, nn.Linear):
                watched[f"{i}.down"] = layer.mlp.down_proj
        maxima = _input_maxima(model, watched, ids)
        smoothed, ratios = 0, []
        group = lay.heads // lay.kv_heads
        for i, layer in enumerate(lay.layers):
            attn, mlp = layer.self_attn, layer.mlp
            for norm, readers, key in (
                (layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj], "qkv"),
                (layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj], "gate_up"),
            ):
                wmax = torch.stack([r.weight.data.abs().float().amax(dim=0) for r in readers]).amax(dim=0)
                s = smoothing_scales(maxima[f"{i}.{key}"], wmax, alpha)
                norm.weight.data = (norm.weight.data.float() / s).to(norm.weight.dtype)
                for r in readers:
                    _scale_columns(r, s)
                smoothed += len(readers)
                ratios.append(float(s.max() / s.min()))
            if f"{i}.down" in maxima:
                s = smoothing_scales(maxima[f"{i}.down"], mlp.down_proj.weight.data.abs().float().amax(dim=0), alpha)
                _scale_rows(mlp.up_proj, s)
                _scale_columns(mlp.down_proj, s)
                smoothed += 1
                ratios.append(float(s.max() / s.min()))
            # o_proj input (heads x head_dim), one scale per (KV head, dim) shared by its q heads
            shape = (lay.kv_heads, group, lay.head_dim)
            amax = maxima[f"{i}.o"].reshape(shape).amax(dim=1)
            wmax = attn.o_proj.weight.data.abs().float().amax(dim=0).reshape(shape).amax(dim=1)
            s_kv = smoothing_scales(amax, wmax, alpha)  # (kv_heads, head_dim)
            _scale_rows(attn.v_proj, s_kv.reshape(-1))
            _scale_columns(attn.o_proj, s_kv[:, None, :].expand(shape).reshape(-1))
            smoothed += 1
            ratios.append(float(s_kv.max() / s_kv.min()))
        return {
            "alpha": alpha,
            "layers_smoothed": smoothed,
            "max_scale_ratio": max(ratios),
            "down_proj_smoothed": any(k.endswith(".down") for k in maxima),
            "calibration": calib,
        }
