"""NAMO and NAMO-D: fp64 parity with the plain-loop references and the oracles of namo_adago.md §7."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import muonlab
from tests.helpers import extreme_gradient, rel_err as _rel, run_steps as _run, spectral_norm as _spec
from muonlab.stages.namo import clamp_to_mean
from tests.reference.muon import polar
from tests.reference.namo import clamp_columns, init_state, namo_d_step, namo_step

pytestmark = pytest.mark.filterwarnings("ignore:.*plain parameter list:UserWarning")
F64 = torch.float64
# square, tall, wide, 1 x n, n x 1, a 4-D conv, and a linear sharing the conv's (4, 18) view (mixed bucket)
SHAPES = [(6, 6), (9, 4), (3, 7), (1, 5), (5, 1), (4, 3, 3, 2), (4, 18)]


def _params(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, dtype=F64, generator=g).requires_grad_() for s in shapes]


def _grads(shapes, steps, seed=1):
    """Random gradients whose scale also varies from step to step (so the norm ratios move)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        out.append([torch.randn(*s, dtype=F64, generator=g) * math.exp(torch.randn((), dtype=F64, generator=g).item())
                    for s in shapes])
    return out


# ----------------------------------------------------------------------------- reference parity
NAMO_CASES = [
    dict(variant="official"),
    dict(variant="official", conv_shape="flattened", nesterov=False),
    dict(variant="paper"),
    dict(variant="paper", nesterov=True),
    dict(variant="official", lr=1.5),  # the min(., 1) caps engage
    dict(variant="official", decay="adamw"),  # W (1 - lr wd), minxin-zhg/namo issues #1 / #3
    dict(variant="paper", decay="adamw"),
]


@pytest.mark.parametrize("kw", NAMO_CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_namo_equals_reference_fp64(kw):
    """NAMO (fp64, SVD) == the per-matrix loop of §2.2/§2.3 to 1e-10 relative over 20 steps."""
    params = _params(SHAPES)
    ref = [p.detach().clone() for p in params]
    hp = dict(lr=0.05, momentum=0.9, mu2=0.95, eps=1e-8, weight_decay=0.1) | kw
    opt = muonlab.NAMO([{"params": params}], orthogonalizer="svd", **hp)
    nesterov = kw.get("nesterov", kw["variant"] == "official")
    states = [init_state(p) for p in params]
    for gs in _grads(SHAPES, 20):
        for p, G in zip(params, gs):
            p.grad = G.clone()
        opt.step()
        for i, G in enumerate(gs):
            ref[i] = namo_step(ref[i], G, states[i], lr=hp["lr"], mu1=0.9, mu2=0.95, eps=1e-8, wd=hp["weight_decay"],
                               nesterov=nesterov, variant=kw["variant"], conv_shape=kw.get("conv_shape", "leading"),
                               decay=kw.get("decay", "adaptive"))
    for p, r in zip(params, ref):
        assert _rel(p.detach(), r) < 1e-10
    for p, st in zip(params, states):
        assert abs(opt.state[p]["namo.v"].item() - st.v.item()) <= 1e-10 * st.v.item()


NAMOD_CASES = [
    dict(variant="official", c=0.75),
    dict(variant="official", c=0.3, conv_shape="flattened", nesterov=False),
    dict(variant="paper", c=0.5),
    dict(variant="paper", c=1.5),  # c outside (0, 1]: no clamp
    dict(variant="official", c=0.4, lr=2.0),  # per-column caps engage
    dict(variant="official", c=0.4, lr=0.5, weight_decay=1.5),  # the per-column decay floor at 0 engages
    dict(variant="official", c=0.75, decay="adamw"),
    dict(variant="paper", c=0.5, decay="adamw"),
]


@pytest.mark.parametrize("kw", NAMOD_CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_namo_d_equals_reference_fp64(kw):
    """NAMO-D (fp64, SVD) == the column-by-column loop of §3.2/§3.3 to 1e-10 relative over 20 steps."""
    params = _params(SHAPES)
    ref = [p.detach().clone() for p in params]
    hp = dict(lr=0.05, momentum=0.9, mu2=0.95, eps=1e-8, weight_decay=0.1) | kw
    opt = muonlab.NAMOD([{"params": params}], orthogonalizer="svd", **hp)
    nesterov = kw.get("nesterov", kw["variant"] == "official")
    states = [init_state(p, columns=True) for p in params]
    for gs in _grads(SHAPES, 20):
        for p, G in zip(params, gs):
            p.grad = G.clone()
        opt.step()
        for i, G in enumerate(gs):
            ref[i] = namo_d_step(ref[i], G, states[i], lr=hp["lr"], mu1=0.9, mu2=0.95, eps=1e-8, wd=hp["weight_decay"],
                                 nesterov=nesterov, variant=kw["variant"], c=kw["c"],
                                 conv_shape=kw.get("conv_shape", "leading"), decay=kw.get("decay", "adaptive"))
    for p, r in zip(params, ref):
        assert _rel(p.detach(), r) < 1e-10


# ----------------------------------------------------------------------------- oracles (§7)
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("shape,conv_shape", [((7, 5), "leading"), ((4, 3, 3, 2), "leading"), ((4, 3, 3, 2), "flattened")])
def test_oracle1_first_step_stepsize(nesterov, shape, conv_shape):
    """Oracle 1: alpha_1 = lr (1 + mu1 with Nesterov); dW = -min(alpha kappa sqrt(max(A,B)), 1) Orth(G) - wd min(alpha,1) W."""
    lr, mu1, wd = 0.03, 0.95, 0.1
    (p,) = _params([shape])
    W0 = p.detach().clone()
    G = torch.randn(*shape, dtype=F64)
    opt = muonlab.NAMO([p], lr=lr, momentum=mu1, eps=0.0, weight_decay=wd, nesterov=nesterov, conv_shape=conv_shape,
                       orthogonalizer="svd")
    _run(opt, [p], [[G]])
    alpha = lr * (1 + mu1) if nesterov else lr
    A, B = (shape[0], shape[1]) if conv_shape == "leading" else (shape[0], math.prod(shape[1:]))
    O = polar(G.reshape(shape[0], -1)).reshape(shape)
    expected = W0 - min(alpha * 0.2 * math.sqrt(max(A, B)), 1) * O - wd * min(alpha, 1) * W0
    assert _rel(p.detach(), expected) < 1e-12


def test_oracle2_constant_gradient_is_moonlight_muon():
    """Oracle 2 (non-Nesterov, eps = 0): with G_t = G, NAMO's trajectory is Moonlight Muon's with the same lr and wd."""
    shapes = [(6, 6), (9, 4), (3, 7), (4, 3, 3, 2)]
    a, b = _params(shapes), _params(shapes)
    Gs = [torch.randn(*s, dtype=F64) for s in shapes]
    hp = dict(lr=0.02, momentum=0.9, nesterov=False, weight_decay=0.1, orthogonalizer="svd")
    namo = muonlab.NAMO(a, mu2=0.99, eps=0.0, conv_shape="flattened", **hp)
    muon = muonlab.Muon(b, adjust_lr="rms", **hp)
    for x, y in zip(_run(namo, a, [Gs] * 15), _run(muon, b, [Gs] * 15)):
        for p, q in zip(x, y):
            assert _rel(p, q) < 1e-10


def test_oracle2_constant_gradient_nesterov_stepsize():
    """Oracle 2 (Nesterov): with G_t = G, alpha_t = lr (1 - mu1^(t+1)) / (1 - mu1^t) at every step."""
    lr, mu1, shape = 0.02, 0.9, (8, 5)
    (p,) = _params([shape])
    G = torch.randn(*shape, dtype=F64)
    O = polar(G)
    opt = muonlab.NAMO([p], lr=lr, momentum=mu1, mu2=0.99, eps=0.0, weight_decay=0.1, orthogonalizer="svd")
    W = p.detach().clone()
    for t, (Wn,) in enumerate(_run(opt, [p], [[G]] * 12), start=1):
        alpha = lr * (1 - mu1 ** (t + 1)) / (1 - mu1**t)
        expected = W * (1 - 0.1 * alpha) - alpha * 0.2 * math.sqrt(8) * O
        assert _rel(Wn, expected) < 1e-10
        W = Wn


def test_oracle3_no_momentum_no_ema_is_muon():
    """Oracle 3: mu1 = mu2 = 0 and eps = 0 give Moonlight Muon with momentum 0 for any gradient sequence."""
    shapes = [(6, 6), (9, 4), (3, 7), (1, 5)]
    a, b = _params(shapes), _params(shapes)
    grads = _grads(shapes, 12)
    namo = muonlab.NAMO(a, lr=0.03, momentum=0.0, mu2=0.0, eps=0.0, weight_decay=0.1, orthogonalizer="svd")
    muon = muonlab.Muon(b, lr=0.03, momentum=0.0, weight_decay=0.1, adjust_lr="rms", orthogonalizer="svd")
    for x, y in zip(_run(namo, a, grads), _run(muon, b, grads)):
        for p, q in zip(x, y):
            assert _rel(p, q) < 1e-10


@pytest.mark.parametrize("cls", [muonlab.NAMO, muonlab.NAMOD])
@pytest.mark.parametrize("variant", ["official", "paper"])
@pytest.mark.parametrize("k", [1e-3, 1e4])
def test_oracle4_scale_invariance(cls, variant, k):
    """Oracle 4: with eps = 0 (caps inactive), feeding k G_t gives the same iterates as G_t."""
    shapes = [(6, 6), (9, 4), (3, 7)]
    a, b = _params(shapes), _params(shapes)
    grads = _grads(shapes, 10)
    kw = dict(lr=0.01, eps=0.0, weight_decay=0.1, variant=variant, orthogonalizer="svd")
    x = _run(cls(a, **kw), a, grads)
    y = _run(cls(b, **kw), b, [[k * G for G in gs] for gs in grads])
    for p, q in zip(x[-1], y[-1]):
        assert _rel(p, q) < 1e-10


def test_oracle5_namo_d_c1_update_is_multiple_of_orth():
    """Oracle 5: with c = 1 the update is a scalar multiple of O: dW[:, j] / O[:, j] constant, dW^T dW ∝ I."""
    shape = (9, 5)
    (p,) = _params([shape])
    opt = muonlab.NAMOD([p], c=1.0, weight_decay=0.0, orthogonalizer="svd")
    grads = _grads([shape], 6)
    W, M = p.detach().clone(), torch.zeros(shape, dtype=F64)
    for t, (Wn,) in enumerate(_run(opt, [p], grads), start=1):
        dW = Wn - W
        gram = dW.T @ dW
        scale = gram.diagonal().mean()
        assert ((gram - scale * torch.eye(5, dtype=F64)).norm() / scale).item() < 1e-10
        M = 0.95 * M + 0.05 * grads[t - 1][0]
        O = polar(0.95 * M + 0.05 * grads[t - 1][0])  # Orth of the Nesterov-mixed momentum
        d = (dW * O).sum(0) / (O * O).sum(0)  # (n,) least-squares column factors dW[:, j] = d_j O[:, j]
        assert (d.max() - d.min()).item() < 1e-10 * d.abs().max().item()
        assert _rel(dW, d.mean() * O) < 1e-10
        W = Wn


@pytest.mark.parametrize("case", ["constant", "n=1"])
@pytest.mark.parametrize("variant", ["official", "paper"])
def test_oracle6_namo_d_c1_equals_namo_when_ratios_agree(case, variant):
    """Oracle 6: NAMO-D(c=1) == NAMO when all column ratios agree (constant gradients, or n = 1)."""
    shapes = [(6, 4), (9, 3)] if case == "constant" else [(7, 1), (3, 1)]
    a, b = _params(shapes), _params(shapes)
    if case == "constant":
        grads = [[torch.randn(*s, dtype=F64) for s in shapes]] * 10
    else:
        grads = _grads(shapes, 10)
    kw = dict(lr=0.03, eps=0.0, weight_decay=0.1, variant=variant, orthogonalizer="svd")
    for x, y in zip(_run(muonlab.NAMOD(a, c=1.0, **kw), a, grads), _run(muonlab.NAMO(b, **kw), b, grads)):
        for p, q in zip(x, y):
            assert _rel(p, q) < 1e-10


def test_oracle6_namo_d_c1_differs_from_namo_in_general():
    """Oracle 6, converse: with uneven columns the mean of ratios is not the ratio of norms."""
    shape = (6, 4)
    a, b = _params([shape]), _params([shape])
    scale = torch.tensor([1.0, 10.0, 0.1, 3.0], dtype=F64)
    grads = [[torch.randn(*shape, dtype=F64) * scale * (1 + t % 3)] for t in range(6)]
    kw = dict(lr=0.03, orthogonalizer="svd")
    x = _run(muonlab.NAMOD(a, c=1.0, **kw), a, grads)[-1][0]
    y = _run(muonlab.NAMO(b, **kw), b, grads)[-1][0]
    assert _rel(x, y) > 1e-6


def test_oracle7_clamp_band():
    """Oracle 7: for c in (0, 1] every entry lands in [c mean, mean / c]; in-band entries are unchanged."""
    g = torch.Generator().manual_seed(0)
    for c in [0.01, 0.3, 0.75, 1.0]:
        r = torch.rand(5, 40, generator=g, dtype=F64) ** 4 * 10
        mean = r.mean(-1, keepdim=True)
        out = clamp_to_mean(r, c)
        assert (out >= c * mean * (1 - 1e-15)).all() and (out <= mean / c * (1 + 1e-15)).all()
        inside = (r >= c * mean) & (r <= mean / c)
        assert torch.equal(out[inside], r[inside])
        torch.testing.assert_close(clamp_to_mean(7.0 * r, c), 7.0 * out)  # homogeneity
        assert out.tolist()[0] == pytest.approx(clamp_columns(r[0].tolist(), c))


@pytest.mark.parametrize("c", [0.0, 1.5, 10.0])
def test_oracle7_c_outside_unit_interval_means_no_clamp(c):
    """Oracle 7: c outside (0, 1] disables the clamp, in the helper and in the optimizer."""
    r = torch.tensor([[0.0, 1.0, 100.0, 1e-6]])
    assert torch.equal(clamp_to_mean(r, c), r)
    a, b = _params([(5, 4)]), _params([(5, 4)])
    grads = _grads([(5, 4)], 5)
    x = _run(muonlab.NAMOD(a, c=c, orthogonalizer="svd"), a, grads)[-1][0]
    y = _run(muonlab.NAMOD(b, c=1e-300, orthogonalizer="svd"), b, grads)[-1][0]  # band (0, inf): no-op
    assert _rel(x, y) < 1e-12


def test_oracle8_nan_aware_mean():
    """Oracle 8: nanmean([1, NaN, 3]) = 2 sets the band; all NaN (or all zero) falls back to [0, inf)."""
    assert torch.nanmean(torch.tensor([1.0, math.nan, 3.0])).item() == 2.0
    assert math.isnan(torch.nanmean(torch.tensor([math.nan, math.nan])).item())
    out = clamp_to_mean(torch.tensor([[1.0, math.nan, 3.0]]), 0.75)  # mean 2: band [1.5, 8/3]
    assert out[0, 0] == 1.5 and math.isnan(out[0, 1]) and out[0, 2].item() == pytest.approx(8 / 3)
    out = clamp_to_mean(torch.tensor([[math.nan, math.nan]]), 0.5)
    assert torch.isnan(out).all()
    zero = torch.zeros(1, 3)
    assert torch.equal(clamp_to_mean(zero, 0.5), zero)


def test_oracle9_state_sizes():
    """Oracle 9: NAMO keeps one scalar per matrix; NAMO-D one vector of length n = in_features.

    The official code keeps them in fp32; muonlab keeps these few numbers in fp64 so that squared norms
    of 1e30-entry gradients stay representable (docs/reliability.md).
    """
    lin, conv = nn.Linear(7, 5, bias=False), nn.Conv2d(3, 4, 3, bias=False)
    for cls, key, sizes in [(muonlab.NAMO, "namo.v", [(), ()]), (muonlab.NAMOD, "namo_d.v", [(7,), (27,)])]:
        params = [lin.weight, conv.weight]
        opt = cls(params, ns_dtype="float32")
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
        for p, size in zip(params, sizes):
            st = opt.state[p]
            assert st[key].shape == size and st[key].dtype == torch.float64
            assert set(st) == {"step", "momentum", key}


def test_oracle14_bias_correction_cancels_startup():
    """Oracle 14: mu1 = mu2 = mu, constant G, no Nesterov: alpha_t = lr from the first step on."""
    lr, shape = 0.02, (6, 4)
    (p,) = _params([shape])
    G = torch.randn(*shape, dtype=F64)
    opt = muonlab.NAMO([p], lr=lr, momentum=0.8, mu2=0.8, nesterov=False, eps=0.0, weight_decay=0.0,
                       orthogonalizer="svd")
    W = p.detach().clone()
    for (Wn,) in _run(opt, [p], [[G]] * 10):
        assert _spec(Wn - W) == pytest.approx(lr * 0.2 * math.sqrt(6), rel=1e-12)
        W = Wn


# ----------------------------------------------------------------------------- robustness
@pytest.mark.parametrize("kind", ["zero", "zero-columns", "huge"])
@pytest.mark.parametrize("cls", [muonlab.NAMO, muonlab.NAMOD])
@pytest.mark.parametrize("variant", ["official", "paper"])
@pytest.mark.parametrize("eps", [1e-8, 0.0])
def test_no_nan_or_inf(kind, cls, variant, eps):
    """Zero gradients, zero columns and 1e30 entries leave parameters and state finite (fp32)."""
    shape = (6, 8)
    p = torch.randn(*shape, requires_grad=True)
    opt = cls([p], variant=variant, eps=eps, ns_dtype="float32")
    G = extreme_gradient(shape, kind)
    for t in range(4):
        p.grad = G.clone() if t != 1 else torch.randn(*shape)  # mix in one ordinary step
        opt.step()
        assert torch.isfinite(p).all()
        for key, value in opt.state[p].items():
            assert torch.isfinite(value).all(), key


def test_zero_gradient_from_start_leaves_weights_decayed_only():
    """A zero gradient on the first step moves nothing: alpha = 0, so neither update nor decay."""
    p = torch.randn(5, 4, requires_grad=True)
    W0 = p.detach().clone()
    for cls in (muonlab.NAMO, muonlab.NAMOD):
        opt = cls([p], eps=0.0, ns_dtype="float32")
        p.grad = torch.zeros(5, 4)
        opt.step()
        assert torch.equal(p.detach(), W0)


@pytest.mark.parametrize("cls,hands_over", [(muonlab.NAMO, True), (muonlab.NAMOD, True), (muonlab.Muon, False)])
def test_the_momentum_norm_goes_to_the_orthogonalizer(cls, hands_over):
    """NAMO and NAMO-D give the orthogonalizer the ||M~||_F they computed for their stepsizes: it is
    the Frobenius norm of exactly the matrices orthogonalized (a mixed conv / linear bucket included),
    and the result equals an orthogonalizer that computes the norm itself (fp64, 3 steps)."""
    seen = []

    def told(X, steps, dtype, *, norm=None):
        seen.append((X.clone(), norm))
        return muonlab.orth.auto_orthogonalize(X, steps, dtype, norm=norm)

    def untold(X, steps, dtype):
        return muonlab.orth.auto_orthogonalize(X, steps, dtype)

    finals = []
    for orth_fn in (told, untold):
        params = _params(SHAPES)
        opt = cls(params, orthogonalizer=orth_fn)
        for grads in _grads(SHAPES, 3):
            for p, g in zip(params, grads):
                p.grad = g
            opt.step()
        finals.append(params)
    assert seen
    for X, norm in seen:
        if hands_over:
            assert torch.allclose(norm, torch.linalg.vector_norm(X, dim=(-2, -1)), rtol=1e-14, atol=0)
        else:
            assert norm is None
    assert max(_rel(a.detach(), b.detach()) for a, b in zip(*finals)) < 1e-12


# ----------------------------------------------------------------------------- API
BAD = [("variant", "reference"), ("conv_shape", "out_in"), ("mu2", 1.0), ("mu2", -0.5), ("eps", -1e-8),
       ("scale_coeff", -0.2), ("momentum", 1.0), ("lr", -1.0), ("c", -0.1), ("decay", "wd")]


@pytest.mark.parametrize("key,value", BAD)
def test_invalid_hyperparameter_names_argument(key, value):
    """Invalid hyperparameters raise ValueError naming the argument and the value."""
    with pytest.raises(ValueError) as err:
        muonlab.NAMOD([torch.randn(3, 3, requires_grad=True)], **{key: value})
    assert key in str(err.value) and repr(value)[:4] in str(err.value)


def test_variant_sets_nesterov_default_and_registry():
    """variant picks the Nesterov default (official on, paper off); both presets are registered."""
    p = [torch.randn(3, 3, requires_grad=True)]
    assert muonlab.NAMO(p).defaults["nesterov"] is True
    assert muonlab.NAMO(p, variant="paper").defaults["nesterov"] is False
    assert muonlab.NAMO(p, variant="paper", nesterov=True).defaults["nesterov"] is True
    assert muonlab.NAMOD(p).defaults["c"] == 0.75
    assert muonlab.optimizers()["namo"] is muonlab.NAMO and muonlab.optimizers()["namo-d"] is muonlab.NAMOD
    with pytest.raises(TypeError):
        muonlab.NAMO(p, c=0.5)  # the clamp belongs to NAMO-D only


@pytest.mark.parametrize("cls", [muonlab.NAMO, muonlab.NAMOD])
def test_trains_mlp_with_defaults(cls):
    """Default hyperparameters (fp32 NS for speed) bring an MLP regression loss down within 150 steps."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    X = torch.randn(256, 10)
    y = torch.sin(X[:, :1] * 2) + X[:, 1:2] * X[:, 2:3]
    opt = cls(muonlab.param_groups(model), ns_dtype="float32")
    losses = []
    for _ in range(150):
        opt.zero_grad()
        loss = ((model(X) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cls", [muonlab.NAMO, muonlab.NAMOD])
def test_cuda_no_host_sync_fp32_state_and_cpu_parity(cls):
    """On CUDA a step never syncs with the host, bf16 params keep fp32 state, and fp64 matches the CPU run."""
    shapes = [(64, 32), (16, 8, 3, 3), (16, 72)]  # the conv and the linear share a bucket, not a shape factor
    params = [torch.randn(*s, device="cuda", dtype=torch.bfloat16, requires_grad=True) for s in shapes]
    opt = cls([{"params": params}])
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
        _run(cls([{"params": ps}], lr=0.05, orthogonalizer="svd"), ps, [[G.to(device) for G in gs] for gs in _grads(shapes, 5)])
        runs.append([q.detach().cpu() for q in ps])
    for a, b in zip(*runs):
        assert _rel(b, a) < 1e-10
