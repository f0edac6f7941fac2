"""Turbo-Muon's AOL-preconditioned Newton-Schulz (``muonlab.orth.aol``)."""

from __future__ import annotations

import pytest
import torch

import muonlab
from muonlab import orth
from muonlab.orth.accuracy import gaussian_matrix, log_spectrum_matrix
from tests.reference.aol import aol_reference
from tests.reference.orth_coefficients import SPEC_YOU

F64 = torch.float64
SHAPES = [(8, 8), (12, 5), (5, 12), (1, 9), (9, 1), (6, 2 * 3 * 3)]


def rel(Y: torch.Tensor, P: torch.Tensor) -> float:
    return float((Y - P).norm() / P.norm())


@pytest.mark.parametrize("steps", [0, 1, 4, 5, 7])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_plain_loop_fp64(shape, steps):
    """fp64: equal to the plain per-row loop written from the paper (1e-12), for every shape and step count."""
    X = gaussian_matrix(*shape, seed=sum(shape) + steps)
    Y = orth.aol_newton_schulz(X, steps)
    torch.testing.assert_close(Y, aol_reference(X, steps), rtol=1e-12, atol=1e-12)


def test_batched_equals_per_matrix():
    """A (B, m, n) batch gives each matrix's own result (the AOL factors are per matrix)."""
    X = torch.stack([gaussian_matrix(6, 10, seed=s) * 10.0**s for s in range(3)])
    Y = orth.aol_newton_schulz(X, 4)
    for i in range(3):
        torch.testing.assert_close(Y[i], aol_reference(X[i], 4), rtol=1e-12, atol=1e-12)


def test_coefficients_are_the_last_of_yous_list():
    """4 steps run You's entries 2-5 (the authors' ``ns_consts[-iter:]``); past 5 the last entry repeats."""
    assert list(orth.turbo_coefficients(4)) == SPEC_YOU[1:]
    assert list(orth.turbo_coefficients(5)) == SPEC_YOU
    assert list(orth.turbo_coefficients(7)) == SPEC_YOU + [SPEC_YOU[-1]] * 2
    assert orth.TURBO_STEPS == 4


@pytest.mark.parametrize("kind", ["gaussian", "log-spectrum", "low-rank"])
def test_aol_scaling_bounds_the_spectral_norm(kind):
    """After the AOL row scaling alone (0 steps), sigma_max <= 1, as the Prach-Lampert bound guarantees."""
    if kind == "gaussian":
        X = gaussian_matrix(40, 90, seed=1)
    elif kind == "log-spectrum":
        X = log_spectrum_matrix(40, 90, seed=2)
    else:
        X = gaussian_matrix(40, 3, seed=3) @ gaussian_matrix(3, 90, seed=4)
    Y = orth.aol_newton_schulz(X, 0)
    assert float(torch.linalg.matrix_norm(Y, ord=2)) <= 1 + 1e-12
    # and it starts closer to orthogonal than Frobenius normalisation does
    assert float(torch.linalg.svdvals(Y).max()) > float(torch.linalg.svdvals(X / X.norm()).max())


def test_one_step_fewer_at_equal_accuracy():
    """Gaussian 256x1024 (fp64): AOL x4 is as close to the exact polar factor as You x5 (and far closer than You x4)."""
    X = gaussian_matrix(256, 1024, seed=0)
    P = orth.svd_polar(X)
    aol4, you5, you4 = (rel(Y, P) for Y in (
        orth.aol_newton_schulz(X, 4), orth.newton_schulz(X, "you", 5), orth.newton_schulz(X, "you", 4)))
    assert aol4 <= 1.15 * you5, (aol4, you5)  # measured 0.018 vs 0.017
    assert aol4 < 0.3 * you4, (aol4, you4)  # measured 0.018 vs 0.082
    s = torch.linalg.svdvals(orth.aol_newton_schulz(X, 4))
    assert 0.97 <= float(s.min()) and float(s.max()) <= 1.04  # measured [0.978, 1.032]


def test_ill_conditioned_input_is_not_free():
    """log-spectrum [1e-3, 1]: AOL x4 is better than You x4 but worse than You x5 (the saved step is not free here)."""
    X = log_spectrum_matrix(128, 512, seed=1)
    P = orth.svd_polar(X)
    aol4 = rel(orth.aol_newton_schulz(X, 4), P)
    assert rel(orth.newton_schulz(X, "you", 4), P) > aol4 > rel(orth.newton_schulz(X, "you", 5), P)


def test_zero_and_huge_inputs():
    """Zero matrices and zero rows stay zero; 1e30 entries give the same (finite) result as the rescaled input."""
    Z = torch.zeros(2, 5, 7)
    assert torch.equal(orth.aol_newton_schulz(Z, 4), Z)
    X = gaussian_matrix(5, 7, seed=5).float()
    X[2] = 0
    Y = orth.aol_newton_schulz(X, 4)
    assert torch.isfinite(Y).all() and torch.equal(Y[2], torch.zeros(7))
    huge = orth.aol_newton_schulz(X * 1e30, 4)
    assert torch.isfinite(huge).all()
    torch.testing.assert_close(huge, Y, rtol=1e-5, atol=1e-6)


def test_bf16_compute():
    """bf16 compute keeps the input dtype and lands near the fp64 result (bf16 rounding only)."""
    X = gaussian_matrix(64, 256, seed=6)
    Y = orth.aol_newton_schulz(X.float(), 4, dtype=torch.bfloat16)
    assert Y.dtype == torch.float32
    assert rel(Y.double(), orth.aol_newton_schulz(X, 4)) < 0.05


def test_registry_and_use_in_muon():
    """'turbo_muon' / 'aol' resolve to the kernel; Muon runs with it and trains."""
    X = gaussian_matrix(6, 10, seed=7)
    assert torch.equal(orth.resolve("turbo_muon")(X, 4, None), orth.aol_newton_schulz(X, 4))
    assert orth.resolve("aol") is orth.resolve("turbo-muon")
    W = torch.nn.Parameter(torch.zeros(8, 6, dtype=F64))
    T = gaussian_matrix(8, 6, seed=8)
    opt = muonlab.Muon([{"params": [W]}], lr=0.2, orthogonalizer="turbo_muon", ns_steps=4, momentum=0.5)
    start = float(((W.detach() - T) ** 2).sum())
    for _ in range(40):
        W.grad = 2 * (W.detach() - T)
        opt.step()
    assert float(((W.detach() - T) ** 2).sum()) < 0.3 * start


def test_bad_arguments():
    """steps and eps are checked."""
    X = gaussian_matrix(3, 4, seed=9)
    with pytest.raises(ValueError, match="steps"):
        orth.aol_newton_schulz(X, -1)
    with pytest.raises(ValueError, match="eps"):
        orth.aol_newton_schulz(X, 4, eps=0.0)
