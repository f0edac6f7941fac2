"""AdaGO: fp64 parity with the plain-loop reference and the oracles of namo_adago.md §7 (10-13, 4)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import muonlab
from tests.helpers import extreme_gradient, rel_err as _rel, run_steps as _run, spectral_norm as _spec
from tests.reference.adago import adago_step

pytestmark = pytest.mark.filterwarnings("ignore:.*plain parameter list:UserWarning")
F64 = torch.float64
SHAPES = [(6, 6), (9, 4), (3, 7), (1, 5), (5, 1), (4, 3, 3, 2), (4, 18)]


def _params(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, dtype=F64, generator=g).requires_grad_() for s in shapes]


def _grads(shapes, steps, seed=1, norms=None):
    """Random gradients; Frobenius norms drawn from [0.1, 3] (around gamma = 1) unless ``norms`` fixes them."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in range(steps):
        gs = []
        for s in shapes:
            G = torch.randn(*s, dtype=F64, generator=g)
            target = norms[t] if norms is not None else 0.1 + 2.9 * torch.rand((), dtype=F64, generator=g).item()
            gs.append(G * (target / G.norm()))
        out.append(gs)
    return out


CASES = [
    dict(),  # the paper form
    dict(weight_decay=0.1, nesterov=True, adjust_lr="spectral", v0=0.5),
    dict(weight_decay=0.1, adjust_lr="rms", eps=0.02, gamma=0.5),
]


@pytest.mark.parametrize("kw", CASES, ids=["paper", "wd-nesterov-spectral", "wd-rms-floor"])
def test_adago_equals_reference_fp64(kw):
    """AdaGO (fp64, SVD) == the per-matrix loop of §4.2 to 1e-10 relative over 20 steps."""
    params = _params(SHAPES)
    ref = [p.detach().clone() for p in params]
    hp = dict(lr=0.1, momentum=0.9, gamma=1.0, eps=1e-4, v0=1e-3, nesterov=False, weight_decay=0.0, adjust_lr="none")
    hp.update(kw)
    opt = muonlab.AdaGO([{"params": params}], orthogonalizer="svd", **hp)
    Ms = [torch.zeros(s[0], math.prod(s[1:]), dtype=F64) for s in SHAPES]
    ss = [hp["v0"] ** 2] * len(SHAPES)
    for gs in _grads(SHAPES, 20):
        for p, G in zip(params, gs):
            p.grad = G.clone()
        opt.step()
        for i, G in enumerate(gs):
            ref[i], Ms[i], ss[i] = adago_step(ref[i], G, Ms[i], ss[i], lr=hp["lr"], momentum=hp["momentum"],
                                              gamma=hp["gamma"], eps=hp["eps"], nesterov=hp["nesterov"],
                                              wd=hp["weight_decay"], adjust_lr=hp["adjust_lr"])
    for p, r, s in zip(params, ref, ss):
        assert _rel(p.detach(), r) < 1e-10
        assert opt.state[p]["adago.s"].item() == pytest.approx(s, rel=1e-12)


@pytest.mark.parametrize("g,v0", [(0.5, 0.7), (3.0, 0.7), (0.5, 1e-9), (3.0, 1e-9)])
def test_oracle10_first_step(g, v0):
    """Oracle 10: alpha_1 = max(eps, eta min(g, gamma) / sqrt(v0^2 + min(g, gamma)^2)); v0 -> 0 gives ||dW||_2 = eta."""
    eta, gamma, shape = 0.1, 1.0, (7, 4)
    (p,) = _params([shape])
    W0 = p.detach().clone()
    opt = muonlab.AdaGO([p], lr=eta, gamma=gamma, eps=1e-6, v0=v0, orthogonalizer="svd")
    _run(opt, [p], _grads([shape], 1, norms=[g]))
    gc = min(g, gamma)
    alpha = max(1e-6, eta * gc / math.sqrt(v0**2 + gc**2))
    assert _spec(p.detach() - W0) == pytest.approx(alpha, rel=1e-12)
    if v0 < 1e-6:
        assert _spec(p.detach() - W0) == pytest.approx(eta, rel=1e-12)
        assert (p.detach() - W0).norm().item() == pytest.approx(eta * math.sqrt(4), rel=1e-12)  # Frobenius = eta sqrt(rank)


@pytest.mark.parametrize("g", [0.5, 5.0])
@pytest.mark.parametrize("eps", [1e-12, 0.03])
def test_oracle11_adagrad_norm_decay(g, eps):
    """Oracle 11: v0 -> 0 and a constant norm g (clipped or not) give alpha_t = max(eps, eta / sqrt(t))."""
    eta, shape = 0.1, (6, 5)
    (p,) = _params([shape])
    opt = muonlab.AdaGO([p], lr=eta, gamma=1.0, eps=eps, v0=0.0, orthogonalizer="svd")
    W = p.detach().clone()
    for t, (Wn,) in enumerate(_run(opt, [p], _grads([shape], 20, norms=[g] * 20)), start=1):
        assert _spec(Wn - W) == pytest.approx(max(eps, eta / math.sqrt(t)), rel=1e-12)
        W = Wn


def test_oracle12_large_floor_is_muon():
    """Oracle 12: eps >= eta pins alpha_t = eps, so AdaGO == plain Muon (EMA, no Nesterov, no shape factor) with lr = eps."""
    shapes = [(6, 6), (9, 4), (3, 7), (4, 3, 3, 2)]
    a, b = _params(shapes), _params(shapes)
    grads = _grads(shapes, 15)
    adago = muonlab.AdaGO(a, lr=0.02, eps=0.05, momentum=0.9, orthogonalizer="svd")
    muon = muonlab.Muon(b, lr=0.05, momentum=0.9, nesterov=False, adjust_lr="none", orthogonalizer="svd")
    for x, y in zip(_run(adago, a, grads), _run(muon, b, grads)):
        for p, q in zip(x, y):
            assert _rel(p, q) < 1e-12


def test_oracle13_monotone_envelope():
    """Oracle 13: sqrt(s_t) never decreases and alpha_t <= max(eps, eta gamma / sqrt(s_t))."""
    eta, gamma, eps, shape = 0.1, 1.0, 1e-3, (5, 8)
    g = torch.Generator().manual_seed(5)
    norms = (10 ** (4 * torch.rand(30, generator=g, dtype=F64) - 2)).tolist()  # 1e-2 .. 1e2, around gamma
    (p,) = _params([shape])
    opt = muonlab.AdaGO([p], lr=eta, gamma=gamma, eps=eps, v0=0.1, orthogonalizer="svd")
    W, s_prev = p.detach().clone(), 0.0
    for gs in _grads([shape], 30, norms=norms):
        (Wn,) = _run(opt, [p], [gs])[0]
        s = opt.state[p]["adago.s"].item()
        assert s >= s_prev
        assert _spec(Wn - W) <= max(eps, eta * gamma / math.sqrt(s)) * (1 + 1e-12)
        W, s_prev = Wn, s


@pytest.mark.parametrize("k", [1e-2, 1e2])
def test_oracle4_adago_is_not_scale_invariant(k):
    """Oracle 4, negative control: AdaGO's iterates change when the gradients are scaled (clip and v0 see the scale)."""
    shape = [(6, 4)]
    a, b = _params(shape), _params(shape)
    grads = _grads(shape, 8)
    x = _run(muonlab.AdaGO(a, v0=0.5, orthogonalizer="svd"), a, grads)[-1][0]
    y = _run(muonlab.AdaGO(b, v0=0.5, orthogonalizer="svd"), b, [[k * G for G in gs] for gs in grads])[-1][0]
    assert _rel(x, y) > 1e-3


def test_state_is_one_scalar_per_matrix():
    """AdaGO keeps one fp32 scalar per matrix, s = v0^2 + min(||G||, gamma)^2 after the first step."""
    lin, conv = nn.Linear(7, 5, bias=False), nn.Conv2d(3, 4, 3, bias=False)
    params = [lin.weight, conv.weight]
    opt = muonlab.AdaGO(params, v0=0.5, gamma=1e3, ns_dtype="float32")
    grads = [torch.randn_like(p) for p in params]
    for p, G in zip(params, grads):
        p.grad = G
    opt.step()
    for p, G in zip(params, grads):
        st = opt.state[p]
        assert set(st) == {"step", "momentum", "adago.s"}
        assert st["adago.s"].shape == () and st["adago.s"].dtype == torch.float32
        assert st["adago.s"].item() == pytest.approx(0.25 + G.norm().item() ** 2, rel=1e-5)


@pytest.mark.parametrize("kind", ["zero", "zero-columns", "huge"])
@pytest.mark.parametrize("v0,eps", [(1e-3, 5e-4), (0.0, 0.0)])
def test_no_nan_or_inf(kind, v0, eps):
    """Zero gradients (even with v0 = eps = 0), zero columns and 1e30 entries keep parameters and state finite."""
    shape = (6, 8)
    p = torch.randn(*shape, requires_grad=True)
    opt = muonlab.AdaGO([p], v0=v0, eps=eps, weight_decay=0.1, ns_dtype="float32")
    G = extreme_gradient(shape, kind)
    for t in range(4):
        p.grad = G.clone() if t != 1 else torch.randn(*shape)
        opt.step()
        assert torch.isfinite(p).all()
        for key, value in opt.state[p].items():
            assert torch.isfinite(value).all(), key


BAD = [("gamma", 0.0), ("gamma", float("inf")), ("eps", -1e-3), ("v0", -1.0), ("momentum", 1.0),
       ("adjust_lr", "moon"), ("lr", -0.1)]


@pytest.mark.parametrize("key,value", BAD)
def test_invalid_hyperparameter_names_argument(key, value):
    """Invalid hyperparameters raise ValueError naming the argument and the value."""
    with pytest.raises(ValueError) as err:
        muonlab.AdaGO([torch.randn(3, 3, requires_grad=True)], **{key: value})
    assert key in str(err.value) and repr(value)[:4] in str(err.value)


def test_registered_and_trains_mlp_with_defaults():
    """AdaGO is registered, and its defaults (fp32 NS for speed) bring an MLP regression loss down."""
    assert muonlab.optimizers()["adago"] is muonlab.AdaGO
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    X = torch.randn(256, 10)
    y = torch.sin(X[:, :1] * 2) + X[:, 1:2] * X[:, 2:3]
    opt = muonlab.AdaGO(muonlab.param_groups(model), ns_dtype="float32")
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = ((model(X) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_no_host_sync_fp32_state_and_cpu_parity():
    """On CUDA a step never syncs with the host, bf16 params keep fp32 state, and fp64 matches the CPU run."""
    shapes = [(64, 32), (16, 8, 3, 3), (16, 72)]
    params = [torch.randn(*s, device="cuda", dtype=torch.bfloat16, requires_grad=True) for s in shapes]
    opt = muonlab.AdaGO([{"params": params}], weight_decay=0.1)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            for p in params:
                p.grad = torch.randn_like(p)
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    for p in params:
        assert all(v.dtype == torch.float32 for v in opt.state[p].values())
        assert torch.isfinite(p).all()
    runs = []
    for device in ("cpu", "cuda"):
        ps = [q.detach().to(device).requires_grad_() for q in _params(shapes)]
        _run(muonlab.AdaGO([{"params": ps}], orthogonalizer="svd"), ps, [[G.to(device) for G in gs] for gs in _grads(shapes, 5)])
        runs.append([q.detach().cpu() for q in ps])
    for a, b in zip(*runs):
        assert _rel(b, a) < 1e-10
