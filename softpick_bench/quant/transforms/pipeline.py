"""Run a spec's transforms in order, and prove they kept the model's function."""

from __future__ import annotations

import torch
from torch import nn

from softpick_bench.errors import TransformError
from softpick_bench.quant.spec import QuantSpec
from softpick_bench.quant.transforms.base import get_transform

PROBE_SHAPE = (2, 64)  # seeded random token ids: exactness needs no real text
# largest relative logit change a transform may cause (rounding of the rewritten weights)
TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}
LOW_PRECISION_TOLERANCE = 5e-2


def check_transforms(spec: QuantSpec, device: str) -> None:
    for name, opts in spec.transforms:
        get_transform(name).check(dict(opts), spec, device)


def transforms_shape_problem(spec: QuantSpec, arch: dict) -> str | None:
    for name, opts in spec.transforms:
        problem = get_transform(name).shape_problem(dict(opts), arch)
        if problem:
            return problem
    return None


@torch.no_grad()
def _probe_logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, use_cache=False).logits.float()


def apply_transforms(model: nn.Module, spec: QuantSpec, ctx) -> dict:
    """Apply spec.transforms in place; details per transform and the logit change they caused."""
    if not spec.transforms:
        return {}
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(ctx.seed)
    ids = torch.randint(0, model.config.vocab_size, PROBE_SHAPE, generator=gen).to(device)
    before = _probe_logits(model, ids)
    done = []
    for name, opts in spec.transforms:
        details = get_transform(name).apply(model, dict(opts), spec, ctx)
        done.append({"name": name, "options": dict(opts), **details})
    after = _probe_logits(model, ids)
    rel = float((after - before).abs().max() / before.abs().max().clamp_min(1e-30))
    dtype = next(model.parameters()).dtype
    tol = TOLERANCE.get(dtype, LOW_PRECISION_TOLERANCE)
    if not rel <= tol:
        raise TransformError(
            f"transforms {[n for n, _ in spec.transforms]} changed the unquantized logits by {rel:.2e} "
            f"(relative max), over the {tol:g} a {dtype} model allows: a transform is wrong for this model"
        )
    return {"applied": done, "max_rel_logit_change": rel, "logit_tolerance": tol}
