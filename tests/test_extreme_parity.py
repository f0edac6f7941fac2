"""Extreme gradient magnitudes on the orthogonal part: fp32 steps equal the fp64 reference loops.

Gradients of +-1e30 (their squares overflow fp32) and 1e-30 (their squares underflow it) go through
every orthogonalized optimizer in fp32; the plain per-matrix loops of ``tests/reference`` run the same
gradients in fp64, where nothing overflows. The weights must agree to fp32 rounding of an update of
size ~lr, and no state may hold Inf. The orthogonalizer is the exact polar factor (as in the loops),
so the statistics are what is compared; Newton–Schulz's own normalization is checked against an fp64
plain loop separately.
"""

from __future__ import annotations

import math

import pytest
import torch

import muonlab
from tests.reference.adago import adago_step
from tests.reference.adamuon import adamuon_step
from tests.reference.muon import muon_step
from tests.reference.namo import init_state, namo_d_step, namo_step
from tests.reference.normuon import normuon_step
from tests.reference.trasmuon import trasmuon_init, trasmuon_step

SHAPES = [(6, 4), (4, 6), (5, 10), (3, 2, 2, 2)]  # tall, wide, wide with TrasMuon's gate active (n >= 8), conv
STEPS = 4
SCALES = [1e30, -1e30, 1e-30]

TRAS = dict(
    lr=0.01, momentum=0.95, beta2=0.95, eps=1e-8, weight_decay=0.1, scale_factor=0.2, col_gate_enabled=True,
    col_gate_use="m", energy_quantile=0.5, col_gate_alpha=1.0, col_gate_cmin=0.7, energy_k=3.0,
    use_energy_trigger=True, gate_ema=0.9, col_gate_every=2, col_gate_min_in=8, e_ref_ema_beta=0.9,
    warmup_steps=0, sf_enabled=True, sf_mix=0.3, sf_exclude_warmup=True,
)


def _muon(W, Gs):
    M = torch.zeros(W.shape[0], W[0].numel(), dtype=W.dtype)
    for G in Gs:
        W, M = muon_step(W, G, M, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.1, adjust_lr="spectral")
    return W


def _namo(variant):
    def run(W, Gs):
        st = init_state(W)
        for G in Gs:
            W = namo_step(W, G, st, lr=0.02, mu1=0.95, mu2=0.99, eps=1e-8, wd=0.1, nesterov=True, variant=variant)
        return W
    return run


def _namo_d(W, Gs):
    st = init_state(W, columns=True)
    for G in Gs:
        W = namo_d_step(W, G, st, lr=0.02, mu1=0.95, mu2=0.99, eps=1e-8, wd=0.1, nesterov=True,
                        variant="official", c=0.75)
    return W


def _adago(W, Gs):
    M, s = torch.zeros(W.shape[0], W[0].numel(), dtype=W.dtype), 1e-3**2
    for G in Gs:
        W, M, s = adago_step(W, G, M, s, lr=0.05, momentum=0.95, gamma=1.0, eps=5e-4, wd=0.1)
    return W


def _trasmuon(W, Gs):
    st = trasmuon_init(W.shape[0], W[0].numel())
    for G in Gs:
        W = trasmuon_step(W, G, st, **TRAS)
    return W


def _normuon(W, Gs):
    m, n = W.shape[0], W[0].numel()
    M, v = torch.zeros(m, n, dtype=W.dtype), torch.zeros(m, 1, dtype=W.dtype)
    for G in Gs:
        W, M, v = normuon_step(W, G, M, v, lr=0.02, momentum=0.95, beta2=0.95, eps=1e-10, weight_decay=0.1,
                               variant="official", nesterov=True)
    return W


def _adamuon(W, Gs):
    m, n = W.shape[0], W[0].numel()
    M, V = torch.zeros(m, n, dtype=W.dtype), torch.zeros(m, n, dtype=W.dtype)
    for G in Gs:
        W, M, V = adamuon_step(W, G, M, V, lr=6e-4, momentum=0.95, eps=1e-8, weight_decay=0.1,
                               sign_before_orth=True, nesterov=True)
    return W


# (optimizer, its hyperparameters, the reference run, lr): the same maths on both sides.
CASES = {
    "muon": (muonlab.Muon, dict(lr=0.02, weight_decay=0.1), _muon),
    "namo": (muonlab.NAMO, dict(lr=0.02, weight_decay=0.1), _namo("official")),
    "namo-paper": (muonlab.NAMO, dict(lr=0.02, weight_decay=0.1, variant="paper", nesterov=True), _namo("paper")),
    "namo-d": (muonlab.NAMOD, dict(lr=0.02, weight_decay=0.1), _namo_d),
    "adago": (muonlab.AdaGO, dict(lr=0.05, weight_decay=0.1), _adago),
    "trasmuon": (muonlab.TrasMuon, TRAS, _trasmuon),
    "normuon": (muonlab.NorMuon, dict(lr=0.02, weight_decay=0.1, nesterov=True), _normuon),
    "adamuon": (muonlab.AdaMuon, dict(lr=6e-4, weight_decay=0.1), _adamuon),
}


def _inputs(shape, scale):
    g = torch.Generator().manual_seed(0)
    W = (0.1 * torch.randn(*shape, generator=g)).float()
    # fp32-representable gradients (the fp64 loop sees exactly what the fp32 optimizer sees)
    Gs = [(torch.randn(*shape, generator=g, dtype=torch.float64) * scale).float() for _ in range(STEPS)]
    return W, Gs


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", list(CASES))
def test_extreme_gradients_match_the_fp64_reference(name, scale):
    """fp32 steps with +-1e30 / 1e-30 gradients land where the fp64 loop lands (to fp32 rounding of the update)."""
    cls, kwargs, reference = CASES[name]
    for shape in SHAPES:
        W, Gs = _inputs(shape, scale)
        p = torch.nn.Parameter(W.clone())
        opt = cls([{"params": [p]}], orthogonalizer="svd", **kwargs)
        for G in Gs:
            p.grad = G.clone()
            opt.step()
        want = reference(W.double(), [G.double() for G in Gs])
        moved = (want - W.double()).abs().max().item()
        assert math.isfinite(moved) and moved < 10 * STEPS * kwargs["lr"] * 2  # the update is of size lr
        err = (p.detach().double() - want).abs().max().item()
        # fp32 rounding of W (|W| ~ 0.3) and of an update of size ~lr over a few steps
        assert err <= 2e-6 * (1 + moved), f"{name} {shape} x{scale:g}: off by {err:.3g} (moved {moved:.3g})"
        for v in opt.state[p].values():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                assert torch.isfinite(v).all(), f"{name}: non-finite state at scale {scale:g}"


def _ns_fp64(X: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Jordan's quintic Newton–Schulz as a plain fp64 loop (the normalization X / (||X||_F + eps) first)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = X.shape[0] > X.shape[1]
    Y = X.T if tall else X
    Y = Y / (torch.linalg.norm(Y) + eps)
    for _ in range(steps):
        A = Y @ Y.T
        Y = a * Y + (b * A + c * A @ A) @ Y
    return Y.T if tall else Y


@pytest.mark.parametrize("scale", [1e30, 1e-30, 3e36])
@pytest.mark.parametrize("shape", [(6, 4), (4, 9), (16, 16)])
def test_newton_schulz_normalizes_exactly_at_any_scale(shape, scale):
    """fp32 Newton–Schulz of a 1e30 / 1e-30 matrix equals the fp64 loop (no upper-bound fallback, no 0 norm)."""
    g = torch.Generator().manual_seed(1)
    X = (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).float()
    got = muonlab.orth.newton_schulz(X, steps=5, dtype=torch.float32)
    want = _ns_fp64(X.double())
    err, size = (got.double() - want).abs().max().item(), want.abs().max().item()
    assert err <= 2e-5 * size, f"off by {err:.3g} on entries of size {size:.3g}"  # relative: 1e-30 gives ~1e-21
