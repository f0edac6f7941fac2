"""Pion: fp64 reference loop, spectrum preservation at the derived order, skew state, RMS, memory, validation."""

from __future__ import annotations

import math

import pytest
import torch

import muonlab
from muonlab.stages.pion import exp2
from tests.reference.pion import pion_state, pion_step

F64 = torch.float64
SHAPES = [(6, 6), (9, 4), (3, 7), (1, 5), (5, 1), (4, 3, 3, 2), (10, 12)]


def _opt(params, **kw):
    return muonlab.Pion([{"params": params}], **kw)


def _svals(W: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(W.reshape(W.shape[0], -1))


@pytest.mark.parametrize("alternating,weight_decay", [(True, 0.0), (False, 0.0), (True, 0.05)])
def test_equals_reference_loop_fp64(alternating, weight_decay):
    """fp64 Pion == the plain per-matrix loop to 1e-10 over 20 steps (square, tall, wide, 1 x n, n x 1, conv)."""
    hp = dict(lr=0.02, betas=(0.8, 0.95), eps=1e-8, rms_scale=0.7, alternating=alternating, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(*s, dtype=F64, generator=g).requires_grad_() for s in SHAPES]
    ref = [p.detach().clone() for p in params]
    states = [pion_state(s) for s in SHAPES]
    opt = _opt(params, **hp)
    for t in range(1, 21):
        grads = [torch.randn(*s, dtype=F64, generator=g) for s in SHAPES]
        for p, G in zip(params, grads):
            p.grad = G.clone()
        opt.step()
        for i, G in enumerate(grads):
            ref[i], states[i] = pion_step(ref[i], G, states[i], t, **hp)
    for p, r, st in zip(params, ref, states):
        assert ((p.detach() - r).norm() / r.norm()).item() < 1e-10
        for key in ("m_in", "v_in", "m_out", "v_out"):
            want = st[key]
            got = opt.state[p][f"pion.{key}"]
            assert ((got - want).norm() / want.norm().clamp_min(1e-300)).item() < 1e-10 or want.norm() == 0


def test_truncated_exponential_orthogonality_error_identity():
    """For skew A, E2(hA)^T E2(hA) = I + h^4 A^4 / 4 exactly (the derived O(h^4) error)."""
    g = torch.Generator().manual_seed(1)
    X = torch.randn(3, 7, 7, dtype=F64, generator=g)
    A = X - X.mT
    h = torch.tensor([0.3, 0.05, 1.0], dtype=F64).view(3, 1, 1)
    E = exp2(A, h)
    hA = h * A
    torch.testing.assert_close(E.mT @ E - torch.eye(7, dtype=F64), 0.25 * torch.linalg.matrix_power(hA, 4),
                               rtol=1e-12, atol=1e-12)


def _one_step_drift(lr: float, alternating: bool) -> float:
    g = torch.Generator().manual_seed(2)
    W = torch.randn(12, 8, dtype=F64, generator=g).requires_grad_()
    s0 = _svals(W.detach())
    opt = _opt([W], lr=lr, alternating=alternating)
    W.grad = torch.randn(12, 8, dtype=F64, generator=g)
    opt.step()
    return float(((_svals(W.detach()) - s0).abs() / s0).max())


@pytest.mark.parametrize("alternating", [True, False])
def test_singular_values_drift_at_fourth_order(alternating):
    """One step at lr and lr/2: the relative change of the singular values falls by 2^4 (exponent 4 +- 0.3)."""
    lrs = [0.04, 0.02, 0.01]
    drifts = [_one_step_drift(lr, alternating) for lr in lrs]
    for a, b in zip(drifts, drifts[1:]):
        assert 3.7 < math.log2(a / b) < 4.3, drifts
    assert drifts[-1] < 1e-6  # and tiny in absolute terms


def test_many_steps_keep_the_spectrum_while_muon_does_not():
    """40 steps of random gradients: Pion's singular values move < 1e-5 (relative); Muon's by O(1)."""
    g = torch.Generator().manual_seed(3)
    W0 = torch.randn(10, 6, dtype=F64, generator=g)
    grads = [torch.randn(10, 6, dtype=F64, generator=g) for _ in range(40)]
    drifts = {}
    for name, make in [("pion", lambda p: _opt([p], lr=0.01)), ("muon", lambda p: muonlab.Muon([{"params": [p]}], lr=0.01))]:
        W = W0.clone().requires_grad_()
        opt = make(W)
        for G in grads:
            W.grad = G.clone()
            opt.step()
        drifts[name] = float(((_svals(W.detach()) - _svals(W0)).abs() / _svals(W0)).max())
    assert drifts["pion"] < 1e-5, drifts
    assert drifts["muon"] > 1e-2, drifts


def test_moments_stay_skew_and_symmetric():
    """m_in, m_out stay skew-symmetric and v_in, v_out symmetric (so A = -m / (sqrt(v) + eps) is skew)."""
    g = torch.Generator().manual_seed(4)
    W = torch.randn(7, 5, dtype=F64, generator=g).requires_grad_()
    opt = _opt([W], lr=0.03)
    for _ in range(5):
        W.grad = torch.randn(7, 5, dtype=F64, generator=g)
        opt.step()
    st = opt.state[W]
    for side in ("in", "out"):
        m, v = st[f"pion.m_{side}"], st[f"pion.v_{side}"]
        assert torch.equal(m, -m.mT) and torch.equal(v, v.mT)
        assert m.shape == ((5, 5) if side == "in" else (7, 7))


def test_first_order_move_has_rms_lr_times_c():
    """At a small lr the move W0 - W1 has RMS lr * c (first order; the alpha normalisation)."""
    g = torch.Generator().manual_seed(5)
    for shape, c in [((9, 4), 1.0), ((3, 7), 0.5)]:
        W0 = torch.randn(*shape, dtype=F64, generator=g)
        W = W0.clone().requires_grad_()
        lr = 1e-6
        opt = _opt([W], lr=lr, rms_scale=c, alternating=False)
        W.grad = torch.randn(*shape, dtype=F64, generator=g)
        opt.step()
        rms = float((W.detach() - W0).square().mean().sqrt())
        assert rms == pytest.approx(lr * c, rel=1e-4)


def test_alternating_rotates_one_side_per_step():
    """Step 1 keeps W^T W (only the left side rotates), step 2 keeps W W^T (only the right side), to O(h^4)."""
    g = torch.Generator().manual_seed(6)
    W = torch.randn(6, 4, dtype=F64, generator=g).requires_grad_()
    opt = _opt([W], lr=1e-3)
    grams = []
    for _ in range(2):
        before = W.detach().clone()
        W.grad = torch.randn(6, 4, dtype=F64, generator=g)
        opt.step()
        grams.append((before, W.detach().clone()))
    (a0, a1), (b0, b1) = grams
    assert (a1.T @ a1 - a0.T @ a0).norm() < 1e-9 < (a1 @ a1.T - a0 @ a0.T).norm()
    assert (b1 @ b1.T - b0 @ b0.T).norm() < 1e-9 < (b1.T @ b1 - b0.T @ b0).norm()


def test_descends_on_a_rotation_reachable_target():
    """Fitting T = U W0 V (same spectrum as W0, lr decayed linearly): the loss falls below 1% of its start in 300 steps."""
    g = torch.Generator().manual_seed(7)
    W0 = torch.randn(8, 6, dtype=F64, generator=g)
    U, _ = torch.linalg.qr(torch.randn(8, 8, dtype=F64, generator=g))
    V, _ = torch.linalg.qr(torch.randn(6, 6, dtype=F64, generator=g))
    T = U @ W0 @ V
    W = W0.clone().requires_grad_()
    opt = _opt([W], lr=0.05, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / 300)
    start = float(((W0 - T) ** 2).sum())
    for _ in range(300):
        W.grad = 2 * (W.detach() - T)
        opt.step()
        sched.step()
    assert float(((W.detach() - T) ** 2).sum()) < 0.01 * start


def test_zero_matrix_never_moves_and_zero_gradients_are_finite():
    """A zero-initialised matrix has zero generators forever (documented); zero gradients leave W exactly unchanged."""
    Z = torch.zeros(5, 4, dtype=F64, requires_grad=True)
    W0 = torch.randn(5, 4, dtype=F64)
    W = W0.clone().requires_grad_()
    opt = _opt([Z, W], lr=0.1)
    for _ in range(3):
        Z.grad = torch.randn(5, 4, dtype=F64)
        W.grad = torch.zeros(5, 4, dtype=F64)
        opt.step()
    assert torch.equal(Z.detach(), torch.zeros(5, 4, dtype=F64))
    assert torch.equal(W.detach(), W0)
    assert all(torch.isfinite(v).all() for v in opt.state[W].values())


def test_state_memory_is_2_m2_plus_n2():
    """The state holds 2 (m^2 + n^2) words per matrix (plus the step counter), no m x n momentum."""
    W = torch.randn(12, 5, requires_grad=True)
    opt = _opt([W])
    W.grad = torch.randn(12, 5)
    opt.step()
    words = sum(v.numel() for k, v in opt.state[W].items() if k.startswith("pion."))
    assert words == 2 * (12**2 + 5**2)


@pytest.mark.parametrize("kwargs,match", [
    ({"betas": (0.9, 1.0)}, "betas"), ({"eps": 0.0}, "eps"), ({"rms_scale": 0.0}, "rms_scale"),
    ({"alternating": 1}, "alternating"), ({"lr": -1.0}, "lr"), ({"lr": 10.0, "weight_decay": 0.5}, "weight_decay"),
])
def test_invalid_hyperparameters(kwargs, match):
    """Invalid hyperparameters raise ValueError naming the argument."""
    with pytest.raises(ValueError, match=match):
        _opt([torch.zeros(3, 3, requires_grad=True)], **kwargs)
