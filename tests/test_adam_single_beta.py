"""Adam with beta1 = beta2: fp64 reference loop, the mean/variance identities, the |u| <= 1 bound."""

from __future__ import annotations

import pytest
import torch

import muonlab
from tests.reference.adam_single_beta import adam_single_beta_step

SHAPES = [(6, 6), (9, 4), (3, 7), (1, 5), (4, 3, 3, 2), (5,)]
HP = dict(lr=0.03, beta=0.9, eps=1e-8, weight_decay=0.1)


def _run_reference(params, grads_per_step):
    ref = [p.detach().clone() for p in params]
    ms = [torch.zeros_like(r) for r in ref]
    vs = [torch.zeros_like(r) for r in ref]
    for t, grads in enumerate(grads_per_step, start=1):
        for i, g in enumerate(grads):
            ref[i], ms[i], vs[i] = adam_single_beta_step(ref[i], g, ms[i], vs[i], t, **HP)
    return ref


def _grads(steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(*s, dtype=torch.float64, generator=g) for s in SHAPES] for _ in range(steps)]


@pytest.mark.parametrize("form", ["class", "adamw-betas", "hybrid-adamw-part"])
def test_equals_reference_loop_fp64(form):
    """AdamSingleBeta, AdamW(betas=(b, b)) and a hybrid's adamw_betas=(b, b) == the plain loop (1e-12, 20 steps)."""
    params = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    b = HP["beta"]
    if form == "class":
        opt = muonlab.AdamSingleBeta(params, **HP)
    elif form == "adamw-betas":
        opt = muonlab.AdamW(params, lr=HP["lr"], betas=(b, b), eps=HP["eps"], weight_decay=HP["weight_decay"])
    else:  # every parameter in the AdamW part of Muon
        opt = muonlab.Muon([{"params": params, "algorithm": "adamw"}], adamw_lr=HP["lr"], adamw_betas=(b, b),
                           adamw_eps=HP["eps"], adamw_weight_decay=HP["weight_decay"])
    grads = _grads(20)
    ref = _run_reference(params, grads)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
    for p, r in zip(params, ref):
        assert ((p.detach() - r).norm() / r.norm()).item() < 1e-12


def test_variance_recursion_and_snr_form():
    """s^2 = v - m^2 >= 0 obeys s_t^2 = b s_{t-1}^2 + b(1-b)(g_t - m_{t-1})^2, and the step is
    sign(m) / sqrt(1 + s^2/m^2) / sqrt(1 - b^t) (eps negligible), at every step."""
    b, lr = 0.8, 1e-3
    W = torch.zeros(40, dtype=torch.float64, requires_grad=True)
    opt = muonlab.AdamSingleBeta([W], lr=lr, beta=b, eps=1e-30, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(40, dtype=torch.float64, generator=g)
    m_prev, s2_prev = torch.zeros(40, dtype=torch.float64), torch.zeros(40, dtype=torch.float64)
    for t in range(1, 16):
        G = mean + torch.randn(40, dtype=torch.float64, generator=g)
        before = W.detach().clone()
        W.grad = G
        opt.step()
        m, v = opt.state[W]["exp_avg"], opt.state[W]["exp_avg_sq"]
        s2 = v - m * m
        assert (s2 >= -1e-15).all()
        torch.testing.assert_close(s2, b * s2_prev + b * (1 - b) * (G - m_prev) ** 2, rtol=1e-9, atol=1e-13)
        u = (before - W.detach()) / lr
        snr = torch.sign(m) / torch.sqrt(1 + s2.clamp_min(0) / (m * m)) / (1 - b**t) ** 0.5
        torch.testing.assert_close(u, snr, rtol=1e-9, atol=1e-12)
        m_prev, s2_prev = m.clone(), s2.clone()


def _max_ratio(betas, grads):
    """Largest uncorrected |m_t| / sqrt(v_t) over a 1-D gradient sequence (from the optimizer's steps)."""
    W = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = muonlab.AdamW([W], lr=1.0, betas=betas, eps=1e-30, weight_decay=0.0)
    worst = 0.0
    for t, g in enumerate(grads, start=1):
        before = W.detach().clone()
        W.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        bias = (1 - betas[0] ** t) / (1 - betas[1] ** t) ** 0.5  # undo the bias corrections
        worst = max(worst, (before - W.detach()).abs().item() * bias)
    return worst


QUIET_THEN_SPIKE = [1e-3] * 29 + [1.0]
SPIKE_THEN_ZEROS = [1.0] + [0.0] * 199
_g = torch.Generator().manual_seed(0)
_cauchy = torch.randn(200, generator=_g, dtype=torch.float64) / torch.randn(200, generator=_g, dtype=torch.float64)
HEAVY_TAILED = (_cauchy + 0.3).tolist()


def test_single_beta_bounds_the_ratio_and_distinct_betas_do_not():
    """beta1 = beta2: |m / sqrt(v)| <= 1 for any gradients (v - m^2 is a variance); distinct betas break it."""
    for b in (0.5, 0.9, 0.95, 0.999):
        for grads in (QUIET_THEN_SPIKE, SPIKE_THEN_ZEROS, HEAVY_TAILED):
            assert _max_ratio((b, b), grads) <= 1 + 1e-12
    assert _max_ratio((0.9, 0.999), QUIET_THEN_SPIKE) > 2  # v remembers the quiet stretch: 0.1 / sqrt(0.001)
    assert _max_ratio((0.999, 0.9), SPIKE_THEN_ZEROS) > 2  # m remembers the spike longer than v (b1^2 > b2)


@pytest.mark.parametrize("value", [1.0, -0.1, (0.9, 0.9), "0.9"])
def test_invalid_beta_is_named(value):
    """An invalid beta raises ValueError naming beta and the value."""
    with pytest.raises(ValueError, match="beta="):
        muonlab.AdamSingleBeta([torch.zeros(3, requires_grad=True)], beta=value)
