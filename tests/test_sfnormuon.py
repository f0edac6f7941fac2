"""SF-NorMuon: fp64 reference loop (x, y, z kept explicitly), modes, resume, averaging, validation."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import muonlab
from muonlab.stages.schedule_free import Z_KEY
from tests.reference.sfnormuon import SFPoint, sfadamw_step, sfnormuon_step

SHAPES = [(6, 6), (9, 4), (3, 7), (1, 5), (4, 3, 3, 2)]
HP = dict(lr=0.03, momentum=0.9, sf_momentum=0.8, beta2=0.85, eps=1e-3, weight_decay=0.2, warmup_steps=4)
AUX = dict(lr=0.01, betas=(0.8, 0.9), eps=1e-8, weight_decay=0.1)


def _view(s):
    return s[0], math.prod(s[1:])


def _setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    mats = [torch.randn(*s, dtype=torch.float64, generator=g).requires_grad_() for s in SHAPES]
    bias = torch.randn(5, dtype=torch.float64, generator=g).requires_grad_()
    targets = [torch.randn(*s, dtype=torch.float64, generator=g) for s in [*SHAPES, (5,)]]
    return mats, bias, targets


def _build(mats, bias, **over):
    hp = dict(HP, **over)
    return muonlab.SFNorMuon(
        [{"params": mats}, {"params": [bias], "algorithm": "adamw"}], orthogonalizer="svd",
        adamw_lr=AUX["lr"], adamw_betas=AUX["betas"], adamw_eps=AUX["eps"], adamw_weight_decay=AUX["weight_decay"],
        **hp,
    )


def _grad(y, target, noise):
    """Gradient of 0.5 ||y - target||^2 plus noise: it depends on the point the parameters hold."""
    return (y - target) + noise


def test_equals_reference_loop_fp64():
    """fp64 SF-NorMuon (SVD) == the plain x/y/z loop to 1e-10 over 20 steps (conv, 1 x n, AdamW part, warmup, wd)."""
    mats, bias, targets = _setup()
    opt = _build(mats, bias)
    params = mats + [bias]
    pts = [SFPoint(p.detach().reshape(_view(p.shape)) if p.dim() > 1 else p.detach()) for p in params]
    Ms = [torch.zeros(*_view(s), dtype=torch.float64) for s in SHAPES]
    vs = [torch.zeros(s[0], 1, dtype=torch.float64) for s in SHAPES]
    am, av = torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        noise = [0.3 * torch.randn(p.shape, dtype=torch.float64, generator=g) for p in params]
        for p, T, e in zip(params, targets, noise):
            p.grad = _grad(p.detach(), T, e)
        opt.step()
        for i, (pt, T, e) in enumerate(zip(pts, targets, noise)):
            G = _grad(pt.y.reshape(T.shape), T, e)
            if i < len(SHAPES):
                Ms[i], vs[i] = sfnormuon_step(pt, G.reshape(pt.y.shape), Ms[i], vs[i], **HP)
            else:
                sf = dict(sf_momentum=HP["sf_momentum"], warmup_steps=HP["warmup_steps"])
                am, av = sfadamw_step(pt, G, am, av, **sf, **AUX)
    for p, pt in zip(params, pts):
        assert ((p.detach().reshape(pt.y.shape) - pt.y).norm() / pt.y.norm()).item() < 1e-10
        assert ((opt.state[p][Z_KEY].reshape(pt.z.shape) - pt.z).norm() / pt.z.norm()).item() < 1e-10
    opt.eval()  # the parameters now hold the averages x
    for p, pt in zip(params, pts):
        assert ((p.detach().reshape(pt.x.shape) - pt.x).norm() / pt.x.norm()).item() < 1e-10


def test_first_step_is_the_normuon_paper_step():
    """Step 1 has c = 1 (x = z): the parameters move exactly as NorMuon(variant='paper') with no Nesterov."""
    G = torch.randn(7, 5, dtype=torch.float64)
    W0 = torch.randn(7, 5, dtype=torch.float64)
    a, b = W0.clone().requires_grad_(), W0.clone().requires_grad_()
    sf = muonlab.SFNorMuon([{"params": [a]}], lr=0.05, weight_decay=0.3, orthogonalizer="svd", eps=1e-8)
    nm = muonlab.NorMuon([{"params": [b]}], variant="paper", lr=0.05, weight_decay=0.3, orthogonalizer="svd", eps=1e-8)
    for opt, p in ((sf, a), (nm, b)):
        p.grad = G.clone()
        opt.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-12, atol=1e-14)


def test_average_is_uniform_mean_of_fast_iterates_at_constant_lr():
    """Constant lr, no warmup: c_t = 1/t, so eval() gives x_T = mean(z_1..z_T) exactly."""
    W = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    opt = muonlab.SFNorMuon([{"params": [W]}], lr=0.02, orthogonalizer="svd")
    zs = []
    for t in range(12):
        W.grad = torch.randn(6, 4, dtype=torch.float64)
        opt.step()
        zs.append(opt.state[W][Z_KEY].clone())
    opt.eval()
    torch.testing.assert_close(W.detach(), torch.stack(zs).mean(0), rtol=1e-10, atol=1e-12)


def test_warmup_weights_the_average_by_lr_squared():
    """With warmup T the averaging weights are lr_t^2 = (lr t / T)^2 up to T: x = sum w_t z_t / sum w_t."""
    W = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    opt = muonlab.SFNorMuon([{"params": [W]}], lr=0.02, warmup_steps=6, orthogonalizer="svd", weight_decay=0.0)
    zs, ws = [], []
    for t in range(1, 10):
        W.grad = torch.randn(5, 5, dtype=torch.float64)
        opt.step()
        zs.append(opt.state[W][Z_KEY].clone())
        ws.append(min(1.0, t / 6) ** 2)
    opt.eval()
    w = torch.tensor(ws, dtype=torch.float64)
    expected = (w[:, None, None] * torch.stack(zs)).sum(0) / w.sum()
    torch.testing.assert_close(W.detach(), expected, rtol=1e-10, atol=1e-12)


def test_weight_decay_acts_on_the_fast_iterate():
    """Zero gradients: z_t = (1 - lr wd)^t z_0 and the parameters decay through the averaging only."""
    W0 = torch.randn(4, 6, dtype=torch.float64)
    W = W0.clone().requires_grad_()
    lr, wd = 0.1, 0.5
    opt = muonlab.SFNorMuon([{"params": [W]}], lr=lr, weight_decay=wd, orthogonalizer="svd")
    for _ in range(5):
        W.grad = torch.zeros_like(W)
        opt.step()
    torch.testing.assert_close(opt.state[W][Z_KEY], (1 - lr * wd) ** 5 * W0, rtol=1e-12, atol=0)
    # x_5 = mean of z_1..z_5 (c = 1/t), and y = (1 - beta) z + beta x
    x = sum((1 - lr * wd) ** t for t in range(1, 6)) / 5 * W0
    torch.testing.assert_close(W.detach(), 0.1 * (1 - lr * wd) ** 5 * W0 + 0.9 * x, rtol=1e-12, atol=0)


def test_eval_train_round_trip_and_step_in_eval_raises():
    """eval() puts x in the parameters, train() puts y back (fp64: 1e-13); step() in eval mode raises."""
    mats, bias, targets = _setup()
    opt = _build(mats, bias)
    for t in range(4):
        for p, T in zip(mats + [bias], targets):
            p.grad = _grad(p.detach(), T, 0.0)
        opt.step()
    y = [p.detach().clone() for p in mats + [bias]]
    opt.eval()
    assert not opt.train_mode
    assert any(not torch.equal(p, q) for p, q in zip(mats + [bias], y))
    opt.eval()  # idempotent
    with pytest.raises(RuntimeError, match="train"):
        opt.step()
    opt.train()
    for p, q in zip(mats + [bias], y):
        torch.testing.assert_close(p.detach(), q, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("save_in_eval", [False, True])
def test_resume_is_bitwise_in_both_modes(save_in_eval):
    """Save model + optimizer (train or eval mode), load into fresh copies: the continued runs are bitwise equal."""
    mats, bias, targets = _setup()
    opt = _build(mats, bias)

    def steps(opt, params, n, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(n):
            for p, T in zip(params, targets):
                p.grad = _grad(p.detach(), T, 0.1 * torch.randn(p.shape, dtype=torch.float64, generator=g))
            opt.step()

    steps(opt, mats + [bias], 5, 0)
    if save_in_eval:
        opt.eval()
    saved_opt = copy.deepcopy(opt.state_dict())
    assert saved_opt["muonlab"]["train_mode"] is (not save_in_eval)
    saved_params = [p.detach().clone() for p in mats + [bias]]
    mats2 = [w.clone().requires_grad_() for w in saved_params[:-1]]
    bias2 = saved_params[-1].clone().requires_grad_()
    opt2 = _build(mats2, bias2)
    opt2.load_state_dict(saved_opt)
    assert opt2.train_mode is (not save_in_eval)
    for o in (opt, opt2):
        o.train()
    steps(opt, mats + [bias], 3, 1)
    steps(opt2, mats2 + [bias2], 3, 1)
    for a, b in zip(mats + [bias], mats2 + [bias2]):
        assert torch.equal(a, b)
    opt2.eval()
    assert not copy.deepcopy(opt2).train_mode  # copies keep the mode


def test_closure_first_step_initializes_the_fast_iterate():
    """step(closure) with gradients cleared: z starts at the weights (not at zero)."""
    W = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    W0 = W.detach().clone()
    opt = muonlab.SFNorMuon([{"params": [W]}], lr=0.01, orthogonalizer="svd", weight_decay=0.0)

    def closure():
        opt.zero_grad()
        loss = (W**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert (W.detach() - W0).abs().max().item() < 0.05  # moved by ~lr, not pulled to z = 0


@pytest.mark.parametrize("key,value", [("sf_momentum", 0.0), ("sf_momentum", 1.0), ("warmup_steps", -1),
                                       ("warmup_steps", 2.5), ("beta2", 1.0), ("eps", -1.0), ("lr", -0.1)])
def test_invalid_arguments(key, value):
    """Invalid hyperparameters raise ValueError naming the argument and value."""
    with pytest.raises(ValueError, match=key):
        muonlab.SFNorMuon([torch.randn(3, 3, requires_grad=True)], **{key: value})
