"""AdaMuon: fp64 reference loop, RMS-0.2 and sign oracles, robustness, validation."""

from __future__ import annotations

import math

import pytest
import torch

import muonlab
from tests.reference.adamuon import adamuon_step

SHAPES = [(6, 6), (9, 4), (3, 7), (1, 5), (5, 1), (4, 3, 3, 2), (10, 12)]


def _fp64_run(G_seq, **kw):
    """Run fp64 AdaMuon (SVD) on one zero-initialised matrix; return the list of updates per unit lr."""
    p = torch.zeros_like(G_seq[0]).requires_grad_()
    opt = muonlab.AdaMuon([{"params": [p]}], orthogonalizer="svd", weight_decay=0.0, **kw)
    lr = opt.param_groups[0]["lr"]
    updates = []
    for G in G_seq:
        before = p.detach().clone()
        p.grad = G.clone()
        opt.step()
        updates.append((before - p.detach()) / lr)
    return updates


@pytest.mark.parametrize("sign_before_orth", [True, False])
def test_equals_reference_loop_fp64(sign_before_orth):
    """fp64 AdaMuon (SVD) == the plain per-matrix loop to 1e-10 over 20 steps, menagerie incl. conv, wd on."""
    hp = dict(lr=0.01, momentum=0.9, eps=1e-8, weight_decay=0.1, sign_before_orth=sign_before_orth, nesterov=True)
    params = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    ref = [p.detach().clone() for p in params]
    Ms = [torch.zeros(s[0], math.prod(s[1:]), dtype=torch.float64) for s in SHAPES]
    Vs = [torch.zeros(s[0], math.prod(s[1:]), dtype=torch.float64) for s in SHAPES]
    opt = muonlab.AdaMuon([{"params": params}], orthogonalizer="svd", **hp)
    g = torch.Generator().manual_seed(2)
    for _ in range(20):
        grads = [torch.randn(*s, dtype=torch.float64, generator=g) for s in SHAPES]
        for p, G in zip(params, grads):
            p.grad = G.clone()
        opt.step()
        for i, G in enumerate(grads):
            ref[i], Ms[i], Vs[i] = adamuon_step(ref[i], G, Ms[i], Vs[i], **hp)
    for p, r, V in zip(params, ref, Vs):
        assert ((p.detach() - r).norm() / r.norm()).item() < 1e-10
        assert ((opt.state[p]["adamuon.v"] - V).norm() / V.norm()).item() < 1e-10


@pytest.mark.parametrize("sign_before_orth", [True, False])
def test_update_rms_is_point_two(sign_before_orth):
    """Every step's update (per unit lr) has RMS 0.2, for any shape and gradient scale."""
    for shape in [(6, 6), (9, 4), (3, 7), (1, 5)]:
        G_seq = [1e4 * torch.randn(*shape, dtype=torch.float64) for _ in range(5)]
        for U in _fp64_run(G_seq, sign_before_orth=sign_before_orth):
            assert U.square().mean().sqrt().item() == pytest.approx(0.2, rel=1e-7)  # eps = 1e-8 in the norm


def test_first_step_is_scaled_sign():
    """First step: V = (1-b) O^2, so O^ = sign(O)/sqrt(1-b) and every entry of the update is +-0.2 (eps = 0)."""
    G = torch.randn(7, 5, dtype=torch.float64)
    (U,) = _fp64_run([G], eps=0.0)
    torch.testing.assert_close(U.abs(), torch.full_like(U, 0.2), rtol=1e-10, atol=0)


def test_sign_pre_step_ignores_elementwise_magnitudes():
    """With sign_before_orth, gradients rescaled by a fixed positive matrix D give the same iterates; v1 does not."""
    g = torch.Generator().manual_seed(5)
    G_seq = [torch.randn(6, 4, dtype=torch.float64, generator=g) for _ in range(6)]
    D = torch.rand(6, 4, dtype=torch.float64, generator=g) * 100 + 0.01
    a = _fp64_run(G_seq, sign_before_orth=True)
    b = _fp64_run([G * D for G in G_seq], sign_before_orth=True)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
    c = _fp64_run([G * D for G in G_seq], sign_before_orth=False)
    assert (a[-1] - c[-1]).norm() > 1e-3


def test_defaults_share_lr_with_adamw_part():
    """Defaults follow the official GPT-2 config: one lr (6e-4) and wd 0.1 for both parts."""
    model = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 10))
    opt = muonlab.AdaMuon(muonlab.param_groups(model))
    by_algo = {g["algorithm"]: g for g in opt.param_groups if g.get("role") != "vector"}
    assert by_algo["orthogonal"]["lr"] == by_algo["adamw"]["lr"] == 6e-4
    assert by_algo["orthogonal"]["weight_decay"] == by_algo["adamw"]["weight_decay"] == 0.1


@pytest.mark.parametrize("key,value", [("sign_before_orth", 1), ("eps", -1.0), ("momentum", 1.0), ("lr", -0.1)])
def test_invalid_arguments(key, value):
    """Invalid hyperparameters raise ValueError naming the argument and value."""
    with pytest.raises(ValueError, match=key):
        muonlab.AdaMuon([{"params": [torch.randn(3, 3, requires_grad=True)]}], **{key: value})
