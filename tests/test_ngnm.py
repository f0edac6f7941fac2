"""NGN-M: fp64 reference loops (paper form and the Muon extension), step-size properties, the loss API."""

from __future__ import annotations

import math

import pytest
import torch

import muonlab
from tests.reference.ngnm import ngn_gamma, ngnm_heavy_ball, ngnm_muon

F64 = torch.float64
SHAPES = [(6, 6), (9, 4), (3, 7), (1, 5), (5, 1), (4, 3, 3, 2), (10, 12)]


def _data(steps: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    grads = [[torch.randn(*s, dtype=F64, generator=g) for s in SHAPES] for _ in range(steps)]
    losses = [0.5 + 5 * float(torch.rand((), dtype=F64, generator=g)) for _ in range(steps)]
    return grads, losses


@pytest.mark.parametrize("via", ["loss", "closure"])
def test_equals_paper_heavy_ball_fp64(via):
    """direction='sgd' == Algorithm 1's heavy-ball recursion (x_{-1} = x_0) to 1e-12 over 20 steps, all shapes."""
    hp = dict(lr=0.3, momentum=0.8)
    g = torch.Generator().manual_seed(1)
    params = [torch.randn(*s, dtype=F64, generator=g).requires_grad_() for s in SHAPES]
    xs = [p.detach().clone() for p in params]
    xs_prev = [x.clone() for x in xs]
    opt = muonlab.NGNM([{"params": params}], **hp)
    grads, losses = _data(20)
    for G, f in zip(grads, losses):
        for p, Gi in zip(params, G):
            p.grad = Gi.clone()
        loss = torch.tensor(f, dtype=F64)
        returned = opt.step(loss=loss) if via == "loss" else opt.step(lambda: loss)
        assert returned is loss
        xs, xs_prev = ngnm_heavy_ball(xs, xs_prev, G, f, **hp)
    for p, x in zip(params, xs):
        assert ((p.detach() - x).norm() / x.norm()).item() < 1e-12


def test_muon_direction_equals_reference_fp64():
    """direction='muon' (extension) == Muon at lr = gamma_k (exact polar factor), decay with c, 20 steps."""
    hp = dict(lr=0.05, momentum=0.9, weight_decay=0.1)
    g = torch.Generator().manual_seed(2)
    params = [torch.randn(*s, dtype=F64, generator=g).requires_grad_() for s in SHAPES]
    xs = [p.detach().clone() for p in params]
    Ms = [torch.zeros(s[0], math.prod(s[1:]), dtype=F64) for s in SHAPES]
    opt = muonlab.NGNM([{"params": params}], direction="muon", orthogonalizer="svd", **hp)
    grads, losses = _data(20, seed=3)
    for G, f in zip(grads, losses):
        for p, Gi in zip(params, G):
            p.grad = Gi.clone()
        opt.step(loss=torch.tensor(f, dtype=F64))
        xs, Ms = ngnm_muon(xs, Ms, G, f, **hp)
    for p, x in zip(params, xs):
        assert ((p.detach() - x).norm() / x.norm()).item() < 1e-10


def _first_move(c: float, f: float, G: torch.Tensor) -> float:
    """|W0 - W1| / ((1 - beta) |G|) after one step: the step size gamma_0 the optimizer used."""
    W = torch.zeros_like(G, requires_grad=True)
    opt = muonlab.NGNM([{"params": [W]}], lr=c, momentum=0.5)
    W.grad = G.clone()
    opt.step(loss=torch.tensor(f, dtype=G.dtype))
    return float(W.detach().norm() / (0.5 * G.norm()))


def test_step_size_regimes():
    """gamma <= c always; ~c when c||g||^2 << 2f; ~2f/||g||^2 (Polyak-like, independent of c) when >> 2f."""
    G = torch.randn(8, 5, dtype=F64, generator=torch.Generator().manual_seed(4))
    sq = float((G * G).sum())
    for c, f in [(1e-4, 3.0), (0.1, 3.0), (10.0, 3.0), (1e4, 0.01)]:
        gamma = _first_move(c, f, G)
        assert gamma == pytest.approx(ngn_gamma(c, f, [G]), rel=1e-12)
        assert gamma <= c
    assert _first_move(1e-6, 3.0, G) == pytest.approx(1e-6, rel=1e-4)
    assert _first_move(1e6, 3.0, G) == pytest.approx(2 * 3.0 / sq, rel=1e-4)
    assert _first_move(1e8, 3.0, G) == pytest.approx(_first_move(1e6, 3.0, G), rel=1e-4)


def test_global_norm_over_all_stepped_parameters():
    """One gamma for the whole step: ||g||^2 sums over every orthogonal-group parameter, not per matrix."""
    g = torch.Generator().manual_seed(5)
    A, B = (torch.zeros(4, 3, dtype=F64, requires_grad=True), torch.zeros(6, 2, dtype=F64, requires_grad=True))
    GA, GB = torch.randn(4, 3, dtype=F64, generator=g), 10 * torch.randn(6, 2, dtype=F64, generator=g)
    opt = muonlab.NGNM([{"params": [A]}, {"params": [B]}], lr=1.0, momentum=0.0)
    A.grad, B.grad = GA.clone(), GB.clone()
    opt.step(loss=torch.tensor(2.0, dtype=F64))
    gamma = ngn_gamma(1.0, 2.0, [GA, GB])
    torch.testing.assert_close(A.detach(), -gamma * GA, rtol=1e-12, atol=0)
    torch.testing.assert_close(B.detach(), -gamma * GB, rtol=1e-12, atol=0)


def test_stable_far_beyond_the_sgd_momentum_step_size():
    """Least squares: NGN-M converges for c from 1 to 1e3; heavy ball with the same step diverges from c = 100 on."""
    g = torch.Generator().manual_seed(6)
    A = torch.randn(40, 8, dtype=F64, generator=g)
    b = A @ torch.randn(8, 1, dtype=F64, generator=g)
    loss_fn = lambda x: ((A @ x - b) ** 2).sum() / (2 * 40)  # noqa: E731
    start = float(loss_fn(torch.zeros(8, 1, dtype=F64)))
    for c in [1.0, 10.0, 100.0, 1e3]:
        finals = {}
        for name in ("ngnm", "sgdm"):
            x = torch.zeros(8, 1, dtype=F64, requires_grad=True)
            opt = (muonlab.NGNM([{"params": [x]}], lr=c, momentum=0.9) if name == "ngnm"
                   else torch.optim.SGD([x], lr=c, momentum=0.9, dampening=0.9))  # heavy ball, step (1-beta) c
            for _ in range(150):
                opt.zero_grad()
                loss = loss_fn(x)
                loss.backward()
                opt.step(loss=loss.detach()) if name == "ngnm" else opt.step()
            finals[name] = float(loss_fn(x.detach()))
        assert finals["ngnm"] < 1e-3 * start, (c, finals)
        if c >= 100:
            assert not finals["sgdm"] < start, (c, finals)  # diverged (or NaN)


def test_loss_is_required():
    """step() without a loss raises TypeError naming it; closure and loss together, or a vector loss, ValueError."""
    W = torch.zeros(3, 3, requires_grad=True)
    opt = muonlab.NGNM([{"params": [W]}])
    W.grad = torch.ones(3, 3)
    with pytest.raises(TypeError, match="loss"):
        opt.step()
    with pytest.raises(ValueError, match="not both"):
        opt.step(lambda: torch.tensor(1.0), loss=torch.tensor(1.0))
    with pytest.raises(ValueError, match="scalar"):
        opt.step(loss=torch.ones(2))
    assert torch.equal(W.detach(), torch.zeros(3, 3)) and len(opt.state[W]) == 0


def test_no_host_sync_in_step(monkeypatch):
    """step(loss=tensor) reads nothing back from the device (Tensor.item / __bool__ / __float__ forbidden)."""
    W = torch.randn(5, 4, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    opt = muonlab.NGNM([{"params": [W]}, {"params": [b], "algorithm": "adamw"}])
    W.grad, b.grad = torch.randn(5, 4), torch.randn(4)
    opt.step(loss=torch.tensor(1.0))  # state creation

    def sync(*args, **kwargs):
        raise AssertionError("host sync inside step()")

    for name in ("item", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    opt.step(loss=torch.tensor(2.0))


def test_degenerate_losses():
    """Zero loss with zero gradients, and a negative loss, give no move and no NaN; a NaN loss skips the step."""
    W0 = torch.randn(4, 4)
    W = W0.clone().requires_grad_()
    opt = muonlab.NGNM([{"params": [W]}])
    W.grad = torch.zeros(4, 4)
    opt.step(loss=torch.tensor(0.0))
    W.grad = torch.randn(4, 4)
    opt.step(loss=torch.tensor(-1.0))
    assert torch.equal(W.detach(), W0) and all(torch.isfinite(v).all() for v in opt.state[W].values())
    W.grad = torch.randn(4, 4)
    opt.step(loss=torch.tensor(1.0))
    moved, state = W.detach().clone(), {k: v.clone() for k, v in opt.state[W].items()}
    W.grad = torch.randn(4, 4)
    opt.step(loss=torch.tensor(float("nan")))
    assert torch.equal(W.detach(), moved)
    assert all(torch.equal(opt.state[W][k], v) for k, v in state.items())


@pytest.mark.parametrize("kwargs,match", [
    ({"direction": "adam"}, "direction"), ({"lr": -1.0}, "lr"), ({"momentum": 1.0}, "momentum"),
    ({"direction": "muon", "ns_steps": 0}, "ns_steps"),
])
def test_invalid_hyperparameters(kwargs, match):
    """Invalid hyperparameters raise ValueError naming the argument."""
    with pytest.raises(ValueError, match=match):
        muonlab.NGNM([{"params": [torch.zeros(3, 3, requires_grad=True)]}], **kwargs)


def ddp_case(rank: int, world: int) -> None:
    """One rank: a different loss per rank, the same (already averaged) gradient; NGNM must use the mean loss."""
    import torch.distributed as dist

    G = torch.randn(6, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    W = torch.zeros(6, 4, dtype=F64, requires_grad=True)
    opt = muonlab.NGNM([{"params": [W]}], lr=1.0, momentum=0.5, process_group=dist.group.WORLD)
    W.grad = G.clone()
    opt.step(loss=torch.tensor(1.0 + rank, dtype=F64))
    mean_loss = 1.0 + (world - 1) / 2
    torch.testing.assert_close(W.detach(), -0.5 * ngn_gamma(1.0, mean_loss, [G]) * G, rtol=1e-12, atol=0)
    # Pion under DDP: every rank computes the same rotation as a single process would
    W0 = torch.randn(6, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    P, Q = W0.clone().requires_grad_(), W0.clone().requires_grad_()
    pion = muonlab.Pion([{"params": [P]}], lr=0.05, process_group=dist.group.WORLD)
    local = muonlab.Pion([{"params": [Q]}], lr=0.05)
    for t in range(3):
        grad = torch.randn(6, 4, dtype=F64, generator=torch.Generator().manual_seed(10 + t))
        P.grad, Q.grad = grad.clone(), grad.clone()
        pion.step()
        local.step()
    assert torch.equal(P.detach(), Q.detach())


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_averages_the_loss(tmp_path):
    """DDP (process_group=, 2 gloo ranks): NGNM's gamma uses the mean loss over ranks; Pion equals its local run."""
    from tests.distributed_cases import spawn

    spawn(ddp_case, 2, str(tmp_path))
