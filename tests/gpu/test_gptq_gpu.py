"""GPU check of GPTQ's Triton block kernel: the CUDA solver against the plain column loop, on CUDA.

Per-layer output error within 1% of the reference (expected: equal to float rounding).
"""

from __future__ import annotations

import pytest
import torch

from softpick_bench.quant.gptq_solver import gptq_quantize, gptq_reference, output_error

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize(("bits", "group_size", "act_order"), [(4, 128, False), (2, 128, False), (3, None, True)])
def test_cuda_solver_matches_reference(bits, group_size, act_order):
    torch.manual_seed(0)
    x = torch.distributions.StudentT(3.0).sample((4096, 1024)).cuda()
    w = 0.05 * torch.randn(3072, 1024, device="cuda")
    h = 2 * x.T @ x / x.shape[0]
    ref = gptq_reference(w, h, bits, group_size, True, act_order=act_order)
    got = gptq_quantize(w, h, bits, group_size, True, act_order=act_order)
    assert got.is_cuda and torch.isfinite(got).all()
    e_ref, e_got = output_error(w, ref, x), output_error(w, got, x)
    assert abs(e_got - e_ref) <= 0.01 * e_ref, (e_got, e_ref)
