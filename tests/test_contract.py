"""The generic contract every registered optimizer must meet (DESIGN.md, Tests).

Runs over ``muonlab.optimizer_infos()`` and each entry's sample hyperparameters, so a new
optimizer is covered by adding one registry line.
"""

from __future__ import annotations

import copy

import pytest
import torch

import muonlab
from tests.helpers import EXTREME_KINDS, extreme_gradient, step

CASES = [
    pytest.param(info.cls, kwargs, id=f"{info.name}-{i}")
    for info in muonlab.optimizer_infos()
    for i, kwargs in enumerate(info.sample_kwargs)
]


class Quadratic:
    """A fixed convex problem over a matrix, a conv-shaped tensor, a 3-D stack and a vector."""

    shapes = {"W": (12, 8), "C": (6, 2, 3, 3), "E": (2, 5, 9), "b": (7,)}

    def __init__(self, dtype: torch.dtype = torch.float32, seed: int = 0, init: str = "zeros"):
        g = torch.Generator().manual_seed(seed)
        self.targets = {k: torch.randn(*s, generator=g).to(dtype) for k, s in self.shapes.items()}
        # init="random" for optimizers that cannot leave a zero matrix (Pion rotates W, keeping its spectrum)
        start = {k: torch.randn(*s, generator=g) if init == "random" else torch.zeros(*s) for k, s in self.shapes.items()}
        self.params = {k: x.to(dtype).requires_grad_() for k, x in start.items()}

    def groups(self):
        P = self.params
        return [{"params": [P["W"], P["C"], P["E"]]}, {"params": [P["b"]], "algorithm": "adamw"}]

    def loss(self) -> torch.Tensor:
        return sum(((self.params[k].float() - t.float()) ** 2).sum() for k, t in self.targets.items())

    def backward(self) -> float:
        for p in self.params.values():
            p.grad = None
        loss = self.loss()
        loss.backward()
        return loss.item()

    def snapshot(self):
        return {k: p.detach().clone() for k, p in self.params.items()}


def _init(cls) -> str:
    """Where the quadratic starts: at zero, or at a random point for spectrum-preserving optimizers."""
    return "random" if getattr(cls, "preserves_spectrum", False) else "zeros"


def _run(cls, kwargs, steps, problem=None, sched=False):
    problem = problem or Quadratic(init=_init(cls))
    opt = cls(problem.groups(), **kwargs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / (2 * steps)) if sched else None
    losses = []
    for _ in range(steps):
        losses.append(problem.backward())
        step(opt, losses[-1])
        if scheduler:
            scheduler.step()
    losses.append(problem.loss().item())
    return problem, opt, losses


@pytest.mark.parametrize("sched", [False, True])
@pytest.mark.parametrize("cls,kwargs", CASES)
def test_goes_downhill(cls, kwargs, sched):
    """The loss of a quadratic falls by at least 30% in 60 steps (with and without an LR scheduler)."""
    _, _, losses = _run(cls, kwargs, 60, sched=sched)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0], losses[::10]


@pytest.mark.parametrize("cls,kwargs", CASES)
def test_state_dict_round_trip(cls, kwargs):
    """Saving and loading the state gives bitwise-identical next steps."""
    problem, opt, _ = _run(cls, kwargs, 5)
    saved = copy.deepcopy(opt.state_dict())
    twin = Quadratic()
    for k, p in twin.params.items():
        p.data.copy_(problem.params[k])
    opt2 = cls(twin.groups(), **kwargs)
    opt2.load_state_dict(saved)
    for _ in range(3):
        step(opt, problem.backward())
        step(opt2, twin.backward())
    for k in problem.params:
        assert torch.equal(problem.params[k], twin.params[k]), k


@pytest.mark.parametrize("cls,kwargs", CASES)
def test_add_param_group(cls, kwargs):
    """A group added after a few steps is trained too."""
    problem, opt, _ = _run(cls, kwargs, 3)
    extra = (torch.randn(5, 4) if _init(cls) == "random" else torch.zeros(5, 4)).requires_grad_()
    target = torch.randn(5, 4)
    group = {"params": [extra]}
    if cls is muonlab.AdamW:
        group["algorithm"] = "adamw"
    opt.add_param_group(group)
    start = ((extra - target) ** 2).sum().item()
    for _ in range(30):
        loss = problem.backward() + ((extra.detach() - target) ** 2).sum().item()
        extra.grad = 2 * (extra.detach() - target)
        step(opt, loss)
    assert ((extra - target) ** 2).sum().item() < start


@pytest.mark.parametrize("cls,kwargs", CASES)
def test_grad_none_skipped(cls, kwargs):
    """Parameters without a gradient keep their value and get no state."""
    problem = Quadratic()
    opt = cls(problem.groups(), **kwargs)
    problem.backward()
    problem.params["W"].grad = None
    before = problem.params["W"].detach().clone()
    step(opt)
    assert torch.equal(problem.params["W"], before)
    assert len(opt.state[problem.params["W"]]) == 0


@pytest.mark.parametrize("cls,kwargs", CASES)
def test_zero_gradients_no_nan(cls, kwargs):
    """All-zero gradients for several steps leave parameters and state finite."""
    problem = Quadratic()
    opt = cls(problem.groups(), **kwargs)
    for _ in range(3):
        for p in problem.params.values():
            p.grad = torch.zeros_like(p)
        step(opt)
    for p in problem.params.values():
        assert torch.isfinite(p).all()
        for v in opt.state[p].values():
            if torch.is_tensor(v):
                assert torch.isfinite(v).all()


@pytest.mark.parametrize("kind", EXTREME_KINDS)
@pytest.mark.parametrize("cls,kwargs", CASES)
def test_extreme_gradients_stay_finite(cls, kwargs, kind):
    """Zero gradients, gradients zero in some columns, and 1e30 entries keep parameters and state finite."""
    problem = Quadratic()
    opt = cls(problem.groups(), **dict(kwargs, weight_decay=0.1))
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        for p in problem.params.values():
            p.grad = extreme_gradient(tuple(p.shape), kind, g)
        step(opt)
    for name, p in problem.params.items():
        assert torch.isfinite(p).all(), name
        for key, v in opt.state[p].items():
            assert torch.isfinite(v).all(), (name, key)


@pytest.mark.parametrize("cls,kwargs", CASES)
def test_deterministic(cls, kwargs):
    """Two identical runs are bitwise identical."""
    a, _, _ = _run(cls, kwargs, 8)
    b, _, _ = _run(cls, kwargs, 8)
    for k in a.params:
        assert torch.equal(a.params[k], b.params[k])


@pytest.mark.parametrize("cls,kwargs", CASES)
def test_bf16_params_smoke(cls, kwargs):
    """bf16 parameters train (finite, downhill) with fp32 state (fp64 for the squared-norm statistics)."""
    problem, opt, losses = _run(cls, kwargs, 30, problem=Quadratic(torch.bfloat16, init=_init(cls)))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    for p in problem.params.values():
        assert p.dtype == torch.bfloat16
        assert all(v.dtype in (torch.float32, torch.float64) for v in opt.state[p].values() if torch.is_tensor(v))


@pytest.mark.slow
@pytest.mark.parametrize("cls,kwargs", [c for c in CASES if c.id.endswith("-0")])
def test_compile_agrees_with_eager(cls, kwargs):
    """A torch.compile'd step gives the same parameters as eager (fp32, 3 steps)."""
    eager, _, _ = _run(cls, kwargs, 3)
    problem = Quadratic(init=_init(cls))
    opt = cls(problem.groups(), **kwargs)
    compiled = torch.compile(opt.step)
    # torch 2.13's FX graph cache can return a graph whose guards name another function's
    # arguments (KeyError: 'params' on a warm cache); compile afresh.
    with torch._inductor.config.patch(fx_graph_cache=False):
        for _ in range(3):
            loss = problem.backward()
            compiled(**({"loss": torch.tensor(loss)} if getattr(cls, "needs_loss", False) else {}))
    for k in problem.params:
        torch.testing.assert_close(problem.params[k], eager.params[k], rtol=1e-4, atol=1e-5)
