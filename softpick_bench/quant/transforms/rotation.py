"""QuaRot-style Hadamard rotation of the residual stream, exact in real arithmetic.

1. Fold each RMSNorm's weight into the linear layers it feeds (q/k/v, gate/up, lm_head) and
   set it to 1: a weightless RMSNorm commutes with any orthogonal Q (rms(hQ) = rms(h)).
2. Rotate the residual by Q = diag(random signs) H / sqrt(n) (seeded): the embedding and the
   readers of the residual (q/k/v, gate/up, lm_head) take W Q, its writers (o_proj,
   down_proj) take Q^T W. Tied embeddings are untied first (lm_head then differs from E).
3. Online Hadamard before down_proj (option online_down): its input x is rotated at run
   time (x H) and its weight stored as W H, so activation quantization sees x H.
4. Per head (option heads): values rotated offline (v_proj rows H_d^T per KV head, o_proj
   columns H_d per head) and, when the KV cache is quantized, keys quantized in a Hadamard
   basis (quant/attention_quant.py: quantize k H_d, rotate back; q k^T is unchanged).
Everything is computed in float64 and stored in the model's dtype.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from softpick_bench.errors import UnsupportedQuantError
from softpick_bench.quant.transforms.base import Transform, register_transform
from softpick_bench.quant.transforms.hadamard import HadamardWidthError, check_width, hadamard
from softpick_bench.quant.transforms.layout import llama_layout

_BOOL_OPTIONS = ("online_down", "heads")


class OnlineHadamard(nn.Module):
    """x -> inner(x H): the rotation a fused kernel would apply to down_proj's input."""

    def __init__(self, inner: nn.Module, matrix: torch.Tensor):
        super().__init__()
        self.inner = inner
        self.register_buffer("matrix", matrix, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x.to(self.matrix.dtype) @ self.matrix).to(x.dtype))

    def extra_repr(self) -> str:
        return f"width={self.matrix.shape[0]}"


def head_rotation(head_dim: int, dtype: torch.dtype, device) -> torch.Tensor:
    return torch.from_numpy(hadamard(head_dim)).to(dtype=dtype, device=device)


def _set(linear: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    linear.weight.data = weight.to(linear.weight.dtype).contiguous()
    if bias is not None:
        linear.bias.data = bias.to(linear.bias.dtype)


@register_transform
class Hadamard(Transform):
    name = "hadamard"
    description = "QuaRot residual rotation (norms folded), online Hadamard before down_proj, per-head V/K"
    options = {
        "online_down": "online Hadamard on down_proj's input (default true)",
        "heads": "rotate values per head offline and quantize keys in a Hadamard basis (default true)",
    }

    def check(self, opts, spec, device) -> None:
        super().check(opts, spec, device)
        for k in _BOOL_OPTIONS:
            if not isinstance(opts.get(k, True), bool):
                raise UnsupportedQuantError(f"transform hadamard option {k} must be true or false, got {opts[k]!r}")
        if [n for n, _ in spec.transforms].count(self.name) > 1:
            raise UnsupportedQuantError("transform hadamard is listed twice; rotate once")

    def shape_problem(self, opts, arch) -> str | None:
        head_dim = arch.get("head_dim") or arch["hidden_size"] // arch["num_attention_heads"]
        widths = {"hidden_size": arch["hidden_size"]}
        if opts.get("online_down", True):
            widths["intermediate_size"] = arch["intermediate_size"]
        if opts.get("heads", True):
            widths["head_dim"] = head_dim
        for what, width in widths.items():
            try:
                check_width(width)
            except HadamardWidthError as exc:
                return f"hadamard rotation of the {what}: {exc}"
        return None

    @torch.no_grad()
    def apply(self, model, opts, spec, ctx) -> dict:
        lay = llama_layout(model, "hadamard rotation")
        f64 = torch.float64
        n = lay.embed.weight.shape[1]
        device = lay.embed.weight.device
        tied = lay.lm_head.weight is lay.embed.weight
        if tied:
            lay.lm_head.weight = nn.Parameter(lay.lm_head.weight.detach().clone())
            model.config.tie_word_embeddings = False
        signs = torch.from_numpy(np.random.default_rng(ctx.seed).choice([-1.0, 1.0], size=n))
        q = (signs[:, None] * torch.from_numpy(hadamard(n))).to(device=device, dtype=f64)

        def fold_and_read(norm: nn.Module, readers: list[nn.Linear]) -> None:
            gamma = norm.weight.data.to(f64)
            for lin in readers:
                _set(lin, (lin.weight.data.to(f64) * gamma) @ q)
            norm.weight.data.fill_(1.0)

        def write(lin: nn.Linear) -> None:
            b = None if lin.bias is None else lin.bias.data.to(f64) @ q
            _set(lin, q.T @ lin.weight.data.to(f64), b)

        lay.embed.weight.data = (lay.embed.weight.data.to(f64) @ q).to(lay.embed.weight.dtype)
        online = bool(opts.get("online_down", True))
        heads = bool(opts.get("heads", True))
        h_down = None
        for layer in lay.layers:
            attn, mlp = layer.self_attn, layer.mlp
            fold_and_read(layer.input_layernorm, [attn.q_proj, attn.k_proj, attn.v_proj])
            fold_and_read(layer.post_attention_layernorm, [mlp.gate_proj, mlp.up_proj])
            write(attn.o_proj)
            write(mlp.down_proj)
            if heads:
                hd = head_rotation(lay.head_dim, f64, device)
                v = attn.v_proj.weight.data.to(f64).reshape(lay.kv_heads, lay.head_dim, -1)
                _set(attn.v_proj, torch.einsum("ed,hex->hdx", hd, v).reshape(lay.kv_heads * lay.head_dim, -1))
                if attn.v_proj.bias is not None:
                    vb = attn.v_proj.bias.data.to(f64).reshape(lay.kv_heads, -1) @ hd
                    attn.v_proj.bias.data = vb.reshape(-1).to(attn.v_proj.bias.dtype)
                o = attn.o_proj.weight.data.to(f64).reshape(-1, lay.heads, lay.head_dim)
                _set(attn.o_proj, (o @ hd).reshape(o.shape[0], -1))
            if online:
                width = mlp.down_proj.weight.shape[1]
                h_down = torch.from_numpy(hadamard(width)).to(device=device, dtype=f64)
                _set(mlp.down_proj, mlp.down_proj.weight.data.to(f64) @ h_down)
                mlp.down_proj = OnlineHadamard(mlp.down_proj, h_down.to(torch.float32))
        fold_and_read(lay.norm, [lay.lm_head])
        return {
            "residual_width": n,
            "random_signs_seed": ctx.seed,
            "online_down_width": None if h_down is None else int(h_down.shape[0]),
            "head_dim_rotated": lay.head_dim if heads else None,
            "keys_quantized_in_hadamard_basis": heads and spec.kv_bits is not None,
            "norms_folded": 2 * len(lay.layers) + 1,
            "untied_embeddings": tied,
        }
