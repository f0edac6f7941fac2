"""Tests for muonlab.orth: polynomial iterations, Gram-NS, SVD polar, registry.

References are written from the spec (shared/specs/optimizers.md §7) in fp64: the
coefficient lists below are copied from the spec text, and the "scalar reference"
applies the composed polynomial to the singular values of the SVD.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

import muonlab.orth as orth
from tests.reference.orth_coefficients import (  # transcribed from the spec, independent of the module
    SPEC_CUBIC, SPEC_JORDAN, SPEC_PE, SPEC_PE_DION, SPEC_PE_RAW, SPEC_YOU,
)

F64 = torch.float64

SPEC = {
    "jordan": (SPEC_JORDAN, 1.0),
    "you": (SPEC_YOU, 1.0),
    "polar_express": (SPEC_PE, 1.01),
    "polar_express_dion": (SPEC_PE_DION, 1.02),
    "cubic": (SPEC_CUBIC, 1.0),
}


def gaussian(*shape: int, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def with_spectrum(m: int, n: int, sigma: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """U diag(sigma) V^T with Haar-ish random U (m x k), V (n x k), fp64."""
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=F64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=F64))
    return U @ torch.diag(sigma.to(F64)) @ V.T


def scalar_reference(X: torch.Tensor, coeffs, steps: int, prescale: float, eps: float = 1e-7) -> torch.Tensor:
    """U p_T(...p_1(sigma / (s ||X||_F + eps))...) V^T by plain loops over singular values (fp64)."""
    U, S, Vh = torch.linalg.svd(X.to(F64), full_matrices=False)
    s = S / (prescale * torch.linalg.norm(S) + eps)
    for t in range(steps):
        a, b, c = coeffs[min(t, len(coeffs) - 1)]
        s = a * s + b * s**3 + c * s**5
    return U @ torch.diag(s) @ Vh


def svals(Y: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(Y.to(F64))


def rel_err(Y: torch.Tensor, P: torch.Tensor) -> float:
    return float((Y.to(F64) - P.to(F64)).norm() / P.to(F64).norm())


# ----------------------------------------------------------------------------- schedules


@pytest.mark.parametrize("name", sorted(SPEC))
def test_shipped_schedules_match_spec(name):
    """Module tables equal the spec's coefficient lists and default prescales."""
    coeffs, prescale = SPEC[name]
    assert len(orth.SCHEDULES[name]) == len(coeffs)
    for got, want in zip(orth.SCHEDULES[name], coeffs):
        assert got == pytest.approx(want, rel=1e-15, abs=0)
    assert orth.DEFAULT_PRESCALE[name] == prescale


@pytest.mark.parametrize("name", sorted(SPEC))
@pytest.mark.parametrize("steps", [1, 5, 9])
def test_newton_schulz_matches_scalar_reference(name, steps):
    """NS acts on singular values only: equals the composed scalar polynomial (fp64), incl. reuse of the last entry."""
    X = gaussian(48, 96, seed=steps)
    coeffs, prescale = SPEC[name]
    ref = scalar_reference(X, coeffs, steps, prescale)
    Y = orth.newton_schulz(X, name, steps)
    assert (Y - ref).abs().max() < 1e-10


# Bands on a Gaussian 256x1024 fp64 input, 5 steps unless stated. Source: spec §7.9(b)
# "Gaussian" rows (fp64 column), widened by ~0.01; Dion and cubic are not in (b), so their
# bands are the scalar worst case of §7.9(a) (valid because the normalised Gaussian
# spectrum, ~[0.03, 0.09], lies inside [lo, 1] for lo = 1e-3 resp. 1e-2).
GAUSSIAN_BANDS = [
    ("jordan", 5, 0.67, 1.145),  # spec [0.683, 1.134]
    ("you", 5, 0.97, 1.04),  # spec [0.978, 1.032]
    ("polar_express", 5, 0.86, 1.135),  # spec [0.870, 1.124]
    ("polar_express", 8, 0.999, 1.001),  # spec [1.000, 1.000]
    ("polar_express_dion", 5, 0.84, 1.15),  # spec (a) lo=1e-3 step 5: [.85, 1.14]
    ("cubic", 5, 0.076, 1.0),  # spec (a) lo=1e-2 step 5: [.076, 1.0]
]


@pytest.fixture(scope="module")
def gauss_256x1024():
    X = gaussian(256, 1024, seed=0)
    return X, orth.svd_polar(X)


@pytest.mark.parametrize("name,steps,lo,hi", GAUSSIAN_BANDS)
def test_gaussian_singular_value_bands(gauss_256x1024, name, steps, lo, hi):
    """Singular values after NS on Gaussian 256x1024 (fp64) lie in the spec's band."""
    X, _ = gauss_256x1024
    s = svals(orth.newton_schulz(X, name, steps))
    assert lo <= float(s.min()) and float(s.max()) <= hi, (float(s.min()), float(s.max()))


def test_jordan_stalls_and_pe8_converges(gauss_256x1024):
    """Jordan x5 stays ~0.15 away from the polar factor; Polar Express x8 reaches it (spec §7.9b relF)."""
    X, P = gauss_256x1024
    assert 0.14 < rel_err(orth.newton_schulz(X, "jordan", 5), P) < 0.17  # spec 0.154
    assert rel_err(orth.newton_schulz(X, "you", 5), P) < 0.025  # spec 0.017
    assert rel_err(orth.newton_schulz(X, "polar_express", 8), P) < 1e-6  # spec 0.000


def test_log_spectrum_polar_express_8():
    """Log-spaced spectrum sigma in [1e-3, 1], 256x1024: PE x8 gives [0.930, 1.000] (spec §7.9b), relF 0.009."""
    X = with_spectrum(256, 1024, torch.logspace(-3, 0, 256, dtype=F64), seed=1)
    Y = orth.newton_schulz(X, "polar_express", 8)
    s = svals(Y)
    assert 0.92 <= float(s.min()) and float(s.max()) <= 1.001
    assert rel_err(Y, orth.svd_polar(X)) < 0.015


# ----------------------------------------------------------------------------- Gram-NS


@pytest.mark.parametrize("name", ["you", "polar_express"])
@pytest.mark.parametrize("shape", [(64, 200), (200, 64), (3, 32, 90), (2, 90, 32)])
@pytest.mark.parametrize("steps,restarts", [(5, (2,)), (8, (2,)), (8, ()), (8, (2, 5))])
def test_gram_equals_newton_schulz_fp64(name, shape, steps, restarts):
    """Gram-NS is the same iteration: equal to NS to 1e-12 in fp64 (spec §7.6), tall and wide."""
    X = gaussian(*shape, seed=3)
    Y = orth.gram_newton_schulz(X, name, steps, restarts=restarts)
    assert (Y - orth.newton_schulz(X, name, steps)).abs().max() < 1e-12


@pytest.mark.parametrize("pooled", [False, True])
def test_gram_result_is_laid_out_as_its_input(pooled):
    """A tall stack's result is contiguous in the tall layout, not the transposed view of the wide iterate (an
    elementwise op with the parameters would read it strided), in a workspace session or not; the functional
    form (what torch.compile traces) computes the same products; values as the fp64 NS (to 1e-12: BLAS may sum
    the transposed product in another order)."""
    from muonlab.orth.gram import _iterate_functional, _iterate_in_buffers
    from muonlab.orth.schedules import get_schedule
    from muonlab.orth.workspace import Workspace

    for shape in [(3, 90, 32), (3, 32, 90), (200, 64)]:
        X = gaussian(*shape, seed=7)
        with Workspace().session() if pooled else contextlib.nullcontext():
            Y = orth.gram_newton_schulz(X, "jordan", 5)
        assert Y.shape == X.shape and Y.is_contiguous()
        assert (Y - orth.newton_schulz(X, "jordan", 5)).abs().max() < 1e-12
    W = gaussian(2, 32, 90, seed=8)
    W = W / torch.linalg.matrix_norm(W, keepdim=True)  # the iteration's input is normalized
    eye = torch.eye(32, dtype=F64).expand(2, 32, 32)
    triples = get_schedule("jordan")[0]
    tall = _iterate_in_buffers(W.clone(), eye, triples, 5, {2}, tall=True)
    assert tall.shape == (2, 90, 32) and tall.is_contiguous()
    assert (_iterate_functional(W.clone(), eye, triples, 5, {2}, tall=True) - tall).abs().max() < 1e-12
    assert (_iterate_in_buffers(W.clone(), eye, triples, 5, {2}).mT - tall).abs().max() < 1e-12  # the wide result


@pytest.mark.parametrize("known_norm", [False, True])
@pytest.mark.parametrize("numel", ["small", "large"])  # normalize's fp64 form and its scaled form
def test_low_precision_ns_result_is_laid_out_as_its_input(known_norm, numel):
    """The bf16 iteration of a tall stack (the GPU default) keeps the input's layout through the cast, so the
    result is contiguous, not a transposed view (a regression: the cast copy was laid out wide); values as the
    fp32 iteration to bf16 accuracy."""
    shape = (2, 96, 32) if numel == "small" else (2, 1536, 128)
    X = gaussian(*shape, seed=9, dtype=torch.float32)
    norm = torch.linalg.matrix_norm(X) if known_norm else None
    Y = orth.newton_schulz(X, "jordan", 5, dtype=torch.bfloat16, norm=norm)
    assert Y.dtype == torch.float32 and Y.is_contiguous()
    assert rel_err(Y, orth.newton_schulz(X, "jordan", 5)) < 0.02


@pytest.mark.parametrize("name", orth.available())
def test_every_orthogonalizer_returns_a_tall_result_in_its_layout(name):
    """Every registry entry gives a tall stack's result back contiguous (as its input), in fp32 and bf16 compute."""
    X = gaussian(2, 96, 32, seed=10, dtype=torch.float32)
    for dtype in (None, torch.bfloat16):
        Y = orth.resolve(name)(X, 5, dtype)
        assert Y.shape == X.shape and Y.dtype == X.dtype and Y.is_contiguous(), dtype


def test_gram_square_falls_back():
    """Square input: Gram-NS returns exactly the NS result."""
    X = gaussian(40, 40, seed=4)
    assert torch.equal(orth.gram_newton_schulz(X, "you"), orth.newton_schulz(X, "you"))


def test_gram_low_precision_runs():
    """Gram-NS in fp16/bf16 compute: finite and within 0.05 of the fp64 result."""
    X = gaussian(32, 128, seed=5, dtype=torch.float32)
    ref = orth.newton_schulz(X.double(), "you")
    for dt in (torch.float16, torch.bfloat16):
        Y = orth.gram_newton_schulz(X, "you", dtype=dt)
        assert Y.dtype == torch.float32 and torch.isfinite(Y).all()
        assert rel_err(Y, ref) < 0.05
