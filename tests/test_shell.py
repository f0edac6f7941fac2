"""The chain shell: parity with torch.optim, bucketing, state, and input validation."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

import muonlab
from tests.reference.muon import muon_step

# plain parameter lists are used on purpose in several tests; the warning itself is tested below
pytestmark = pytest.mark.filterwarnings("ignore:.*plain parameter list:UserWarning")


def _ns_fp32(grad, ns_coefficients, ns_steps, eps):
    """torch.optim.Muon's Newton–Schulz helper, step for step, but in fp32 instead of bf16."""
    a, b, c = ns_coefficients
    X = grad.float()
    if grad.size(0) > grad.size(1):
        X = X.T
    X = X / X.norm().clamp(min=eps)
    for _ in range(ns_steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if grad.size(0) > grad.size(1) else X


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative error ||a - b|| / ||b|| (norm-wise, as in the issue's tolerances)."""
    return ((a - b).norm() / b.norm()).item()


def _mlp(bias: bool = False) -> nn.Module:
    return nn.Sequential(nn.Linear(12, 32, bias=bias), nn.Tanh(), nn.Linear(32, 24, bias=bias), nn.Tanh(), nn.Linear(24, 5, bias=bias))


def _train(model, opt, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 12, generator=g)
        y = torch.randn(16, 5, generator=g)
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()


@pytest.mark.parametrize("adjust_lr", ["spectral", "rms"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_equals_torch_muon(monkeypatch, adjust_lr, nesterov):
    """muonlab.Muon == torch.optim.Muon (both NS in fp32) to 1e-5 relative over 10 steps."""
    monkeypatch.setattr(torch.optim._muon, "_zeropower_via_newtonschulz", _ns_fp32)
    ref, ours = _mlp(), _mlp()
    ours.load_state_dict(ref.state_dict())
    torch_fn = {"spectral": "original", "rms": "match_rms_adamw"}[adjust_lr]
    opt_ref = torch.optim.Muon(ref.parameters(), lr=0.02, weight_decay=0.1, nesterov=nesterov, adjust_lr_fn=torch_fn)
    opt = muonlab.Muon(
        [{"params": list(ours.parameters())}], lr=0.02, weight_decay=0.1, nesterov=nesterov,
        adjust_lr=adjust_lr, ns_dtype="float32",
    )
    _train(ref, opt_ref, 10)
    _train(ours, opt, 10)
    for p, q in zip(ref.parameters(), ours.parameters()):
        assert _rel(q.detach(), p.detach()) < 1e-5


def test_adamw_groups_equal_torch_adamw():
    """AdamW groups (alone, and inside Muon) == torch.optim.AdamW to 1e-6 over 10 steps."""
    ref, ours = _mlp(bias=True), _mlp(bias=True)
    ours.load_state_dict(ref.state_dict())
    kw = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    _train(ref, torch.optim.AdamW(ref.parameters(), **kw), 10)
    _train(ours, muonlab.AdamW(ours.parameters(), **kw), 10)
    for p, q in zip(ref.parameters(), ours.parameters()):
        assert _rel(q.detach(), p.detach()) < 1e-6

    # Inside Muon: weights frozen by lr=0 on one side and left out of torch's AdamW on the other.
    ref, mixed = _mlp(bias=True), _mlp(bias=True)
    mixed.load_state_dict(ref.state_dict())
    ref_biases = [p for n, p in ref.named_parameters() if n.endswith("bias")]
    biases = [p for n, p in mixed.named_parameters() if n.endswith("bias")]
    weights = [p for n, p in mixed.named_parameters() if n.endswith("weight")]
    _train(ref, torch.optim.AdamW(ref_biases, **kw), 10)
    opt = muonlab.Muon([{"params": weights, "lr": 0.0}, {"params": biases, "algorithm": "adamw"}],
                       adamw_lr=kw["lr"], adamw_betas=kw["betas"], adamw_eps=kw["eps"], adamw_weight_decay=0.1)
    _train(mixed, opt, 10)
    for p, q in zip(ref.parameters(), mixed.parameters()):
        assert _rel(q.detach(), p.detach()) < 1e-6


def test_fp64_conv_and_tall_against_reference_loop():
    """fp64 Muon with SVD on a menagerie (square, tall, wide, 1xn, nx1, 4-D conv) == the plain loop to 1e-12."""
    shapes = [(6, 6), (9, 4), (3, 7), (1, 5), (5, 1), (4, 3, 3, 2)]
    params = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in shapes]
    ref = [p.detach().clone() for p in params]
    bufs = [torch.zeros(s[0], math.prod(s[1:]), dtype=torch.float64) for s in shapes]
    hp = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1, adjust_lr="rms")
    opt = muonlab.Muon([{"params": params}], orthogonalizer="svd", **hp)
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        grads = [torch.randn(*s, dtype=torch.float64, generator=g) for s in shapes]
        for p, G in zip(params, grads):
            p.grad = G.clone()
        opt.step()
        for i, G in enumerate(grads):
            ref[i], bufs[i] = muon_step(ref[i], G, bufs[i], **hp)
    for p, r in zip(params, ref):
        assert p.dtype == torch.float64
        torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-12)
    assert opt.state[params[0]]["momentum"].dtype == torch.float64


def test_batch_3d_equals_separate_matrices():
    """A (E, m, n) parameter with batch_3d=True equals E separate (m, n) parameters."""
    E = torch.randn(3, 5, 4, requires_grad=True)
    parts = [E.detach()[i].clone().requires_grad_() for i in range(3)]
    opt_a = muonlab.Muon([{"params": [E]}], batch_3d=True, ns_dtype="float32")
    opt_b = muonlab.Muon([{"params": parts}], ns_dtype="float32")
    for _ in range(4):
        G = torch.randn(3, 5, 4)
        E.grad = G.clone()
        for i, p in enumerate(parts):
            p.grad = G[i].clone()
        opt_a.step()
        opt_b.step()
    torch.testing.assert_close(E.detach(), torch.stack([p.detach() for p in parts]))


def test_grad_untouched_and_none_skipped():
    """p.grad is never modified; a parameter with grad=None is neither updated nor given state."""
    a, b = torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)
    a.grad = torch.randn(4, 6)
    before_grad, before_b = a.grad.clone(), b.detach().clone()
    opt = muonlab.Muon([{"params": [a, b]}])
    opt.step()
    assert torch.equal(a.grad, before_grad)
    assert torch.equal(b.detach(), before_b)
    assert len(opt.state[b]) == 0


def test_bf16_params_keep_fp32_state_through_state_dict():
    """bf16 parameters get fp32 state, and load_state_dict does not cast it down to bf16."""
    p = torch.randn(8, 8, dtype=torch.bfloat16, requires_grad=True)
    opt = muonlab.Muon([{"params": [p]}])
    p.grad = torch.randn(8, 8, dtype=torch.bfloat16)
    opt.step()
    assert opt.state[p]["momentum"].dtype == torch.float32
    opt2 = muonlab.Muon([{"params": [p]}])
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert opt2.state[p]["momentum"].dtype == torch.float32
    assert torch.equal(opt2.state[p]["momentum"], opt.state[p]["momentum"])


def test_plain_iterable_routes_and_warns_once():
    """A plain parameter list: >=2-D orthogonalized, the rest AdamW, one warning."""
    model = _mlp(bias=True)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        opt = muonlab.Muon(model.parameters())
    assert sum("param_groups" in str(x.message) for x in w) == 1
    algos = {g["algorithm"]: len(g["params"]) for g in opt.param_groups}
    assert algos == {"orthogonal": 3, "adamw": 3}


def test_scheduler_scales_every_group():
    """An LR scheduler multiplies the lr of orthogonal and AdamW groups alike."""
    model = _mlp(bias=True)
    opt = muonlab.Muon(muonlab.param_groups(model), lr=0.02, adamw_lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    assert {g["algorithm"]: g["lr"] for g in opt.param_groups} == pytest.approx({"adamw": 5e-4, "orthogonal": 0.01})
    del sched


BAD = [
    ("lr", -1.0), ("momentum", 1.0), ("momentum", -0.1), ("weight_decay", -0.1), ("ns_steps", 0),
    ("ns_steps", 2.5), ("orthogonalizer", "nope"), ("ns_dtype", "int8"), ("adjust_lr", "moon"),
    ("nesterov", "yes"), ("momentum_form", "fancy"), ("adamw_lr", -1e-3), ("adamw_eps", -1.0),
    ("adamw_betas", (1.0, 0.9)), ("adamw_betas", (0.9,)), ("lr", float("nan")),
]


@pytest.mark.parametrize("key,value", BAD)
def test_invalid_hyperparameter_names_argument(key, value):
    """Every invalid hyperparameter raises ValueError naming the argument and the value."""
    with pytest.raises(ValueError) as err:
        muonlab.Muon([torch.randn(3, 3, requires_grad=True)], **{key: value})
    name = key.removeprefix("adamw_")
    assert name in str(err.value) and repr(value)[:4] in str(err.value)


def test_invalid_group_override_rejected():
    """A bad value inside a param group is rejected too, and the optimizer keeps its groups."""
    opt = muonlab.Muon([torch.randn(3, 3, requires_grad=True)])
    with pytest.raises(ValueError, match="momentum"):
        opt.add_param_group({"params": [torch.randn(2, 2, requires_grad=True)], "momentum": 2.0})
    with pytest.raises(ValueError, match="orthogonalized"):
        opt.add_param_group({"params": [torch.randn(4, requires_grad=True)]})
    with pytest.raises(ValueError, match="algorithm"):
        opt.add_param_group({"params": [torch.randn(4, requires_grad=True)], "algorithm": "sgd"})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("kind", ["sparse", "complex"])
def test_bad_gradient_changes_nothing(kind):
    """Sparse or complex gradients raise before any parameter or state is touched."""
    a = torch.randn(4, 4, requires_grad=True)
    b = torch.randn(5, 3, requires_grad=True)
    opt = muonlab.Muon([{"params": [a]}, {"params": [b]}])
    a.grad = torch.randn(4, 4)
    b.grad = torch.randn(5, 3)
    opt.step()
    snapshot = copy.deepcopy((a.detach(), b.detach(), opt.state_dict()))
    a.grad = torch.randn(4, 4)
    b.grad_dtype = None  # allow assigning a complex gradient to a real tensor
    b.grad = torch.randn(5, 3).to_sparse() if kind == "sparse" else torch.randn(5, 3, dtype=torch.complex64)
    with pytest.raises(RuntimeError, match=kind):
        opt.step()
    assert torch.equal(a.detach(), snapshot[0]) and torch.equal(b.detach(), snapshot[1])
    for key, st in opt.state_dict()["state"].items():
        for name, value in st.items():
            assert torch.equal(value, snapshot[2]["state"][key][name])


def test_closure_returns_loss():
    """step(closure) re-evaluates the loss under grad mode and returns it."""
    w = torch.randn(4, 4, requires_grad=True)
    opt = muonlab.Muon([w])

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() > (w**2).sum().item()


def test_changing_set_of_gradients_keeps_state_exact():
    """Parameters whose gradient is sometimes None: the stacked state is rebuilt and stays per-parameter."""
    a, b, c = (torch.randn(4, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    twins = [t.detach().clone().requires_grad_() for t in (a, b, c)]
    opt = muonlab.Muon([{"params": [a, b, c]}], orthogonalizer="svd")
    solo = [muonlab.Muon([{"params": [t]}], orthogonalizer="svd") for t in twins]
    pattern = [(1, 1, 1), (1, 0, 1), (1, 1, 0), (1, 1, 1), (0, 1, 1)]
    g = torch.Generator().manual_seed(0)
    for mask in pattern:
        for p, t, o, on in zip((a, b, c), twins, solo, mask):
            G = torch.randn(4, 3, dtype=torch.float64, generator=g)
            p.grad = G.clone() if on else None
            t.grad = G.clone() if on else None
            if on:
                o.step()
        opt.step()
    for p, t in zip((a, b, c), twins):
        torch.testing.assert_close(p, t, rtol=1e-12, atol=1e-12)
    assert len(opt._stack_cache) == 1
