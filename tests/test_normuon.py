"""NorMuon: fp64 reference loop, norm/RMS oracles, neuron-wise balance, robustness, validation."""

from __future__ import annotations

import math

import pytest
import torch

import muonlab
from tests.reference.normuon import normuon_step

SHAPES = [(6, 6), (9, 4), (3, 7), (1, 5), (5, 1), (4, 3, 3, 2), (10, 12)]


def _view(s):
    return s[0], math.prod(s[1:])


def _one_step_update(opt_kwargs, G, W=None):
    """Run one fp64 step on a copy of W (zeros by default) and return the update (W0 - W1) / lr."""
    W = torch.zeros_like(G) if W is None else W.clone()
    p = W.clone().requires_grad_()
    opt = muonlab.NorMuon([{"params": [p]}], orthogonalizer="svd", **opt_kwargs)
    p.grad = G.clone()
    opt.step()
    lr = opt.param_groups[0]["lr"]
    return (W - p.detach()) / lr, opt, p


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_equals_reference_loop_fp64(variant):
    """fp64 NorMuon (SVD) == the plain per-matrix loop to 1e-10 over 20 steps, menagerie incl. conv, wd on."""
    hp = dict(lr=0.03, momentum=0.9, beta2=0.8, eps=1e-10, weight_decay=0.1, variant=variant,
              nesterov=variant == "official")
    params = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    ref = [p.detach().clone() for p in params]
    Ms = [torch.zeros(*_view(s), dtype=torch.float64) for s in SHAPES]
    vs = [torch.zeros(s[0], 1, dtype=torch.float64) for s in SHAPES]
    opt = muonlab.NorMuon([{"params": params}], orthogonalizer="svd", **hp)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        grads = [torch.randn(*s, dtype=torch.float64, generator=g) for s in SHAPES]
        for p, G in zip(params, grads):
            p.grad = G.clone()
        opt.step()
        for i, G in enumerate(grads):
            ref[i], Ms[i], vs[i] = normuon_step(ref[i], G, Ms[i], vs[i], **hp)
    for p, r, v in zip(params, ref, vs):
        assert ((p.detach() - r).norm() / r.norm()).item() < 1e-10
        assert ((opt.state[p]["normuon.v"] - v).norm() / v.norm()).item() < 1e-10


def test_official_keeps_frobenius_norm_of_ns_output():
    """Official: ||update||_F = ||O||_F * sqrt(max(1, m/n)); with the exact polar factor ||O||_F = sqrt(min(m, n))."""
    for m, n in [(6, 6), (9, 4), (3, 7)]:
        U, _, _ = _one_step_update({}, torch.randn(m, n, dtype=torch.float64))
        expected = math.sqrt(min(m, n)) * math.sqrt(max(1.0, m / n))
        assert U.norm().item() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("eps", [1e-10, 1e-6])
def test_paper_update_has_rms_point_two(eps):
    """Paper: the update (per unit lr) has RMS exactly 0.2, whatever the shape, gradient scale and eps.

    The paper's ``0.2 sqrt(mn) / ||O^||_F`` has no eps; ``/ (||O^||_F + eps)`` would be off by eps / ||O^||_F,
    ~4e-8 here at eps = 1e-6 and ~4e-12 at 1e-10 (||O^||_F ~ 27 after one step), which the tolerance rejects.
    """
    for m, n in [(6, 6), (9, 4), (3, 7), (1, 5)]:
        G = 1e3 * torch.randn(m, n, dtype=torch.float64)
        U, _, _ = _one_step_update({"variant": "paper", "eps": eps}, G)
        assert (U.square().mean().sqrt()).item() == pytest.approx(0.2, rel=1e-14)


@pytest.mark.parametrize("variant", ["official", "paper"])
def test_first_step_rows_balanced(variant):
    """First step: v = (1-b2) mean_row(O^2), so every output row of the update has the same norm."""
    G = torch.randn(8, 5, dtype=torch.float64) * torch.logspace(-2, 2, 8, dtype=torch.float64)[:, None]
    U, _, _ = _one_step_update({"variant": variant, "eps": 0.0}, G)  # eps = 0: exact balance
    rows = U.norm(dim=1)
    torch.testing.assert_close(rows, rows.mean().expand_as(rows), rtol=1e-8, atol=0)


def test_conv_statistics_on_out_rest_view():
    """Conv weights are normalised per output channel (state (out, 1)), not per (out, in, kh) as officially."""
    G = torch.randn(4, 3, 3, 2, dtype=torch.float64)
    U, opt, p = _one_step_update({"eps": 0.0}, G)
    assert opt.state[p]["normuon.v"].shape == (4, 1)
    rows = U.reshape(4, -1).norm(dim=1)
    torch.testing.assert_close(rows, rows.mean().expand_as(rows), rtol=1e-8, atol=0)


def test_variant_defaults():
    """variant picks lr, Nesterov and the shape rule unless they are given explicitly."""
    w = [{"params": [torch.randn(3, 3, requires_grad=True)]}]
    official = muonlab.NorMuon(w).param_groups[0]
    paper = muonlab.NorMuon(w, variant="paper").param_groups[0]
    assert (official["lr"], official["nesterov"], official["adjust_lr"]) == (0.02, True, "spectral")
    assert (paper["lr"], paper["nesterov"], paper["adjust_lr"]) == (1e-3, False, "none")
    mixed = muonlab.NorMuon(w, variant="paper", lr=0.5, nesterov=True).param_groups[0]
    assert (mixed["lr"], mixed["nesterov"]) == (0.5, True)


@pytest.mark.parametrize("key,value", [("variant", "both"), ("beta2", 1.0), ("eps", -1.0), ("lr", -0.1)])
def test_invalid_arguments(key, value):
    """Invalid hyperparameters raise ValueError naming the argument and value."""
    with pytest.raises(ValueError, match=key):
        muonlab.NorMuon([torch.randn(3, 3, requires_grad=True)], **{key: value})
