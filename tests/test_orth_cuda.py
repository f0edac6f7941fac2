"""muonlab.orth on CUDA (skipped without a GPU): bf16 path, batching, zeros, torch.compile."""

from __future__ import annotations

import pytest
import torch

import muonlab.orth as orth

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
F64 = torch.float64


def rel(Y: torch.Tensor, P: torch.Tensor) -> float:
    return float((Y.double().cpu() - P.double().cpu()).norm() / P.double().cpu().norm())


@pytest.mark.parametrize("name", orth.available())
def test_cuda_bf16_matches_cpu_fp64(name):
    """Every registry entry on CUDA with bf16 compute stays within 0.05 relF of the CPU fp64 result."""
    X = torch.randn(3, 128, 512, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = orth.resolve(name)(X, 5, None)
    Y = orth.resolve(name)(X.float().cuda(), 5, torch.bfloat16)
    assert Y.is_cuda and Y.dtype == torch.float32 and torch.isfinite(Y).all()
    assert rel(Y, ref) < 0.05


def test_cuda_fp64_polar_express_exact():
    """fp64 on CUDA: Polar Express x8 equals the SVD polar factor, Gram-NS equals NS."""
    X = torch.randn(2, 96, 300, dtype=F64, device="cuda")
    P = orth.svd_polar(X)
    assert rel(orth.newton_schulz(X, "polar_express", 8), P) < 1e-8
    assert float((orth.gram_newton_schulz(X, "polar_express", 8) - orth.newton_schulz(X, "polar_express", 8)).abs().max()) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_zero_matrix(dtype):
    """Zero matrices stay exactly zero on CUDA."""
    Z = torch.zeros(4, 8, 16, device="cuda", dtype=dtype)
    for name in orth.available():
        assert torch.equal(orth.resolve(name)(Z, 5, torch.bfloat16), Z)


def test_cuda_compile_agrees_with_eager():
    """torch.compile(newton_schulz) agrees with eager (bf16 compute, fp32 in/out)."""
    X = torch.randn(4, 64, 256, device="cuda")
    eager = orth.newton_schulz(X, "you", 5, dtype=torch.bfloat16)
    compiled = torch.compile(orth.newton_schulz, fullgraph=True)(X, "you", 5, dtype=torch.bfloat16)
    assert float((compiled - eager).norm() / eager.norm()) < 1e-2


@pytest.mark.parametrize("name", ["auto", "newton_schulz", "gram_newton_schulz"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_tall_results_are_contiguous(name, dtype):
    """A tall stack's result comes back in the input's layout (contiguous), in bf16 and fp32 compute alike: a
    transposed view would make the parameter write read one side strided (uncoalesced on a GPU)."""
    X = torch.randn(3, 384, 96, device="cuda")
    Y = orth.resolve(name)(X, 5, dtype)
    assert Y.shape == X.shape and Y.is_contiguous()
    assert rel(Y, orth.newton_schulz(X.double().cpu(), "jordan" if name != "gram_newton_schulz" else "you", 5)) < 0.05
