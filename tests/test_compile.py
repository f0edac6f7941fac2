"""``ChainOptimizer.compile()``: each bucket's chain compiled once, equal to eager, no recompiles under a scheduler."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import muonlab
from muonlab.optim.registry import optimizers

WARMUP = 3  # step 1 eager (state created), step 2 traces, step 3 re-traces with the lr as a symbolic input


def _train(cls, compiled: dict | None, steps: int = 7) -> list[torch.Tensor]:
    """A small MLP under a LambdaLR that changes lr every step: hidden buckets of one rectangular matrix,
    of two square ones (the bucket inductor's CPU backend once failed to compile) and of one more; biases; a head."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(12, 24), torch.nn.Tanh(), torch.nn.Linear(24, 24), torch.nn.Tanh(), torch.nn.Linear(24, 24),
        torch.nn.Tanh(), torch.nn.Linear(24, 40), torch.nn.Tanh(), torch.nn.Linear(40, 3),
    )
    opt = cls(muonlab.param_groups(model))
    if compiled is not None:
        assert opt.compile(**compiled) is opt
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + 0.3 * s))
    x, y = torch.randn(32, 12), torch.randn(32, 3)
    for i in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        with torch._dynamo.config.patch(error_on_recompile=compiled is not None and i >= WARMUP):
            opt.step(**({"loss": loss.detach()} if getattr(cls, "needs_loss", False) else {}))
        sched.step()
    return [p.detach().clone() for p in model.parameters()]


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield
    torch._dynamo.reset()


FAST = ("muon", "normuon")
SLOW = tuple(n for n, c in optimizers().items() if n not in FAST and getattr(c, "default_algorithm", "") != "adamw")


@pytest.mark.parametrize("name", [*FAST, *(pytest.param(n, marks=pytest.mark.slow) for n in SLOW)])
def test_compiled_step_equals_eager_without_graph_breaks_or_recompiles(name, fresh_dynamo):
    """aot_eager (the traced graph, decomposed): equal to eager to fp32 round-off, no graph break, no recompile
    after the warm-up."""
    cls = optimizers()[name]
    eager = _train(cls, None)
    compiled = _train(cls, {"backend": "aot_eager"})
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] > 0  # something was compiled


def test_compile_survives_copies_and_state_dicts(fresh_dynamo):
    """A deepcopy keeps the compile setting (graphs are rebuilt); a state-dict round trip keeps stepping equally."""
    import copy

    p = torch.nn.Parameter(torch.randn(8, 16))
    opt = muonlab.Muon([{"params": [p]}]).compile(backend="aot_eager")
    for _ in range(3):
        p.grad = torch.randn(8, 16)
        opt.step()
    twin = copy.deepcopy(opt)
    assert twin._compile_kwargs == {"backend": "aot_eager"} and not twin._compiled
    q = twin.param_groups[0]["params"][0]
    g = torch.randn(8, 16)
    p.grad, q.grad = g, g.clone()
    opt.step()
    twin.step()
    torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["muon", "namo", "adamuon"])
def test_inductor_compiled_step_equals_eager(name, fresh_dynamo):
    """inductor (generated kernels): equal to eager up to reordered fp32 arithmetic, no recompile after warm-up."""
    cls = optimizers()[name]
    eager = _train(cls, None)
    with torch._inductor.config.patch(fx_graph_cache=False):  # torch 2.13: warm-cache KeyError: 'params'
        compiled = _train(cls, {})
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
