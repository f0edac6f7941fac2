"""muonlab inside the frameworks people train with: torch.compile, torch.amp, Lightning, accelerate.

Each integration trains, checkpoints and resumes, and the resumed trajectory must equal an
uninterrupted run. Everything runs on CPU in a deterministic order (fixed data, no shuffling, one
thread), so the comparisons are exact (``torch.equal``) unless a test says why not.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch import nn
from torch._dynamo.utils import counters

import muonlab


def _mlp(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4)).to(dtype)


def _batches(n: int, dtype: torch.dtype = torch.float32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 8, generator=g).to(dtype), torch.randn(16, 4, generator=g).to(dtype)) for _ in range(n)]


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


# ---------------------------------------------------------------------------- torch.compile
def _compile_run(cls, steps: int, compiled: bool, backend: str, warmup: int = 3):
    """Train an MLP with a per-step LR schedule; return the losses, the params and the graphs added after warm-up."""
    model = _mlp()
    opt = cls(muonlab.param_groups(model, head=["4"]), lr=0.02)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + 0.3 * s))  # a new lr every step
    step = torch.compile(opt.step, backend=backend) if compiled else opt.step
    fwd = torch.compile(model, backend=backend) if compiled else model
    losses, graphs = [], 0
    for i, (x, y) in enumerate(_batches(steps)):
        if compiled and i == warmup:
            graphs = counters["stats"]["unique_graphs"]
        opt.zero_grad()
        loss = nn.functional.mse_loss(fwd(x), y)
        loss.backward()
        with torch._dynamo.config.patch(error_on_recompile=compiled and i >= warmup):  # a recompile raises
            step()
        sched.step()
        losses.append(loss.detach())
    return torch.stack(losses), _params(model), counters["stats"]["unique_graphs"] - graphs if compiled else 0


@pytest.fixture
def fresh_dynamo():
    """A clean Dynamo cache and counters; hitting the recompile limit raises instead of falling back to eager."""
    torch._dynamo.reset()
    counters.clear()
    # torch 2.13's FX graph cache can return a graph whose guards name another function's
    # arguments (KeyError: 'params' on a warm cache); compile afresh.
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True), torch._inductor.config.patch(fx_graph_cache=False):
        yield
    torch._dynamo.reset()


def test_compiled_step_with_scheduler_does_not_recompile(fresh_dynamo):
    """torch.compile(opt.step), lr new at every step: no recompilation after 3 warm-up steps, eager's results."""
    g = torch.Generator().manual_seed(0)
    shapes = [(8, 6), (4, 8), (6,)]  # two matrix shapes (stacks) and an AdamW vector
    grads = [[torch.randn(*s, generator=g) for s in shapes] for _ in range(12)]
    runs = []
    for compiled in (True, False):
        ps = [nn.Parameter(torch.ones(*s)) for s in shapes]
        opt = muonlab.Muon([{"params": ps[:2]}, {"params": ps[2:], "algorithm": "adamw"}], lr=0.02, adamw_lr=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + 0.3 * s))
        # aot_eager: AOTAutograd is where a Python-float lr was specialized (guarded by value) and
        # recompiled every step until recompile_limit; inductor's code generation adds only time here.
        step = torch.compile(opt.step, backend="aot_eager") if compiled else opt.step
        for i, gs in enumerate(grads):
            for p, gr in zip(ps, gs):
                p.grad = gr.clone()
            if compiled and i == 3:
                graphs = counters["stats"]["unique_graphs"]
            with torch._dynamo.config.patch(error_on_recompile=compiled and i >= 3):  # a recompile now raises
                step()
            sched.step()
        runs.append([p.detach().clone() for p in ps])
    assert counters["stats"]["unique_graphs"] == graphs
    for a, e in zip(*runs):  # the traced graph runs the same fp32 kernels, up to decompositions
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("cls", [muonlab.Muon, muonlab.NAMO, muonlab.AdaMuon], ids=lambda c: c.name)
def test_compiled_model_and_step_match_eager(cls, fresh_dynamo):
    """Inductor-compiled model and opt.step (per-step lr): no recompiles after warm-up, eager to fp32 tolerance."""
    losses_c, params_c, new_graphs = _compile_run(cls, 12, compiled=True, backend="inductor")
    losses_e, params_e, _ = _compile_run(cls, 12, compiled=False, backend="inductor")
    assert new_graphs == 0
    # Inductor fuses and reorders fp32 arithmetic (e.g. the Newton-Schulz polynomial), so the
    # results agree to fp32 rounding accumulated over 12 steps, not bitwise.
    torch.testing.assert_close(losses_c, losses_e, rtol=1e-4, atol=1e-5)
    for a, b in zip(params_c, params_e):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
