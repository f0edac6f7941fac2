"""The non-finite gate folded into the stages (``Stack.keep`` / ``Stack.take``, ``buffer(..., gated=True)``).

The semantics (a skipped step changes no value, for every optimizer) are in tests/test_reliability.py.
Here: the gated coefficients themselves, and that a default step of the presets whose state is all
gated does no full-size ``where`` or ``clone`` (the snapshot-and-restore passes it replaces), so the
fast path cannot silently fall back to them.
"""

from __future__ import annotations

import contextlib

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import muonlab
from muonlab.stages.base import Stack


def _stack(gate):
    G = torch.zeros(2, 3, 4, dtype=torch.float64)
    return Stack(grad=G, update=G, group={}, step=None, param_states=[{}, {}], counts=[1, 1], squeeze=[True, True], gate=gate)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keep_and_take_are_the_coefficients_or_the_identity(dtype):
    like = torch.zeros(3, dtype=dtype)
    on, off, none = _stack(torch.tensor(True)), _stack(torch.tensor(False)), _stack(None)
    assert none.keep(0.95, like) == 0.95 and none.take(0.05, like) == 0.05  # no gate: the floats themselves
    for value in (0.95, 0.1, 1 / 3):
        k, t = on.keep(value, like), on.take(value, like)
        assert k.dtype == dtype and k.dim() == 0 and t.dtype == dtype
        # the value a Python scalar operand of this dtype's kernels holds: rounded once
        assert k.item() == torch.tensor(value, dtype=dtype).item() == t.item()
        assert off.keep(value, like).item() == 1.0 and off.take(value, like).item() == 0.0


def test_gated_ema_keeps_values_on_a_skipped_step():
    """M.lerp_(g, take) and v.mul_(keep).addcmul_(0, 0) leave finite state equal; only a zero's sign may flip."""
    off = _stack(torch.tensor(False))
    M = torch.tensor([1.5, -2.0, 0.0, -0.0, 1e-30, -3e38])
    v = M.abs().clone()
    M0, v0 = M.clone(), v.clone()
    g = torch.tensor([7.0, -1.0, 2.0, 0.0, 5.0, 1.0])  # a gated momentum may see any finite input
    M.lerp_(g, off.take(0.05, M))
    z = torch.zeros_like(v)
    v.mul_(off.keep(0.999, v)).addcmul_(z, z, value=0.001)
    assert torch.equal(M, M0) and torch.equal(v, v0)


class _CountFullSize(TorchDispatchMode):
    """Counts ``where`` and ``clone`` calls whose output has at least ``numel`` elements.

    A ``where`` that reads a gradient itself (storage in ``grads``) is the skip gate applied while the
    stack is built, the copy the stack needs anyway; it is counted apart, in ``gated_copies``.
    """

    def __init__(self, numel: int, grads=()):
        super().__init__()
        self.numel, self.calls, self.gated_copies = numel, [], 0
        self.grads = {g.untyped_storage().data_ptr() for g in grads}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in ("where", "clone") and isinstance(out, torch.Tensor) and out.numel() >= self.numel:
            if name == "where" and args[1].untyped_storage().data_ptr() in self.grads:
                self.gated_copies += 1
            else:
                self.calls.append(name)
        return out


GATED = ["muon", "namo", "namo-d", "adago", "normuon", "adamuon", "trasmuon"]


@pytest.mark.parametrize("name", GATED)
def test_default_step_has_no_full_size_where_or_clone(name):
    cls = muonlab.optimizers()[name]
    g = torch.Generator().manual_seed(0)
    mats = [torch.nn.Parameter(torch.randn(48, 32, generator=g)) for _ in range(3)] + [torch.nn.Parameter(torch.randn(32, 48, generator=g))]
    bias = torch.nn.Parameter(torch.randn(48, generator=g))
    opt = cls([{"params": mats}, {"params": [bias], "algorithm": "adamw"}])
    for t in range(3):
        for p in (*mats, bias):
            p.grad = torch.randn(p.shape, generator=g)
        if t < 2:
            opt.step()
    with _CountFullSize(48 * 32, [p.grad for p in mats]) as mode:
        opt.step()
    assert mode.calls == []
    assert mode.gated_copies == 1  # the (32, 48) gradient, alone in its stack; the three small ones are concatenated
    # nor with error feedback, whose residual is gated too
    opt = cls([{"params": mats}, {"params": [bias], "algorithm": "adamw"}], error_feedback=True)
    opt.step()
    with _CountFullSize(48 * 32, [p.grad for p in mats]) as mode:
        opt.step()
    assert mode.calls == []
    # and the same counter does see the snapshot path: schedule-free's z is restored by a where()
    opt = muonlab.SFNorMuon([{"params": mats}, {"params": [bias], "algorithm": "adamw"}])
    opt.step()
    with _CountFullSize(48 * 32, [p.grad for p in mats]) as mode:
        opt.step()
    assert "clone" in mode.calls and "where" in mode.calls


def test_a_skipped_step_is_still_skipped_with_the_gated_write():
    """A -0 weight and a NaN in every position class: the values stay, the step is counted."""
    W = torch.nn.Parameter(torch.randn(6, 4))
    with torch.no_grad():
        W[0, 0] = -0.0
    opt = muonlab.Muon([{"params": [W]}])
    W.grad = torch.randn(6, 4)
    opt.step()
    before, M = W.detach().clone(), opt.state[W]["momentum"].clone()
    W.grad = torch.full((6, 4), math.nan)
    opt.step()
    assert torch.equal(W, before) and torch.equal(opt.state[W]["momentum"], M)
    assert opt.skipped_steps == 1


@pytest.mark.parametrize("shape", [(6, 4), (128, 160)])  # concatenated, then gated / gated as they are stacked
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_stack_of_several_gradients_skips_and_otherwise_equals_the_ungated_step(shape, bad):
    """Two gradients in one stack, on either side of shell._GATED_COPY_MIN: a non-finite entry in one of them
    skips the step (weights and state kept, p.grad untouched), and the steps taken are bitwise those of a run
    without the gate (nonfinite="propagate") that is given only the finite gradients."""
    from muonlab.optim import shell

    assert (shape[0] * shape[1] >= shell._GATED_COPY_MIN) is (shape == (128, 160))
    g = torch.Generator().manual_seed(1)
    W0 = [torch.randn(shape, generator=g) for _ in range(2)]
    grads = [[torch.randn(shape, generator=g) for _ in range(2)] for _ in range(3)]
    bad_grad = grads[1][1].clone()
    bad_grad[-1, 2] = bad

    def run(nonfinite, steps):
        mats = [torch.nn.Parameter(w.clone()) for w in W0]
        opt = muonlab.NAMOD([{"params": mats}], nonfinite=nonfinite)
        for gs in steps:
            for p, gr in zip(mats, gs):
                p.grad = gr
            before = [p.detach().clone() for p in mats], [opt.state[p].get("namo_d.v") for p in mats]
            before = before[0], [None if v is None else v.clone() for v in before[1]]
            opt.step()
            if any(not gr.isfinite().all() for gr in gs):
                assert all(torch.equal(p, q) for p, q in zip(mats, before[0]))
                assert all(torch.equal(opt.state[p]["namo_d.v"], v) for p, v in zip(mats, before[1]))
                assert torch.equal(mats[0].grad, gs[0]) and mats[1].grad[-1, 2].item() != 0
        return mats, opt

    skipped, opt = run("skip", [grads[0], [grads[1][0], bad_grad], grads[2]])
    assert opt.skipped_steps == 1
    ungated, _ = run("propagate", [grads[0], grads[2]])
    assert all(torch.equal(p, q) for p, q in zip(skipped, ungated))


@pytest.mark.parametrize("name", ["muon", "adamuon"])
def test_a_compiled_step_skips_too(name):
    """Under opt.compile() the gate falls back to snapshot-and-restore (an inductor bug, see Stack._folds_gate):
    a NaN step still changes no value and later steps match eager."""
    torch._dynamo.reset()
    runs = []
    for compiled in (False, True):
        g = torch.Generator().manual_seed(0)
        mats = [torch.nn.Parameter(torch.randn(16, 16, generator=g)) for _ in range(2)]
        opt = muonlab.optimizers()[name]([{"params": mats}])
        if compiled:
            opt.compile(backend="aot_eager")
        for t in range(5):
            for p in mats:
                p.grad = torch.randn(p.shape, generator=g)
            if t == 3:
                mats[1].grad[2, 2] = math.nan
                before = [p.detach().clone() for p in mats], {k: v.clone() for k, v in opt.state[mats[0]].items()}
            opt.step()
            if t == 3:
                assert all(torch.equal(p, q) for p, q in zip(mats, before[0]))
                assert all(torch.equal(opt.state[mats[0]][k], v) for k, v in before[1].items())
        assert opt.skipped_steps == 1
        runs.append([p.detach().clone() for p in mats])
    for a, b in zip(*runs):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("bad_at", [None, "small", "small-transposed", "large", "bf16"])
def test_the_cpu_finite_check_sees_every_tensor(bad_at, pooled):
    """Small gradients are checked together (packed by one foreach copy), large ones one by one: a NaN or Inf
    anywhere, in any dtype or layout, is seen; a healthy set passes, huge finite values included. ``pooled``: inside
    workspace sessions, twice, so the second check packs into the views kept from the first."""
    from muonlab.distributed.engine import _max_abs
    from muonlab.orth.workspace import Workspace

    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(7, generator=g), torch.randn(300, 400, generator=g) * 1e30, torch.randn(64, 64, generator=g),
             torch.randn(5, generator=g).to(torch.bfloat16), torch.randn(70000, generator=g),
             torch.randn(20, 30, generator=g).t()]
    if bad_at == "small":
        grads[2][3, 4] = math.nan
    elif bad_at == "small-transposed":
        grads[5][29, 0] = -math.inf
    elif bad_at == "large":
        grads[1][0, 0] = -math.inf
    elif bad_at == "bf16":
        grads[3][1] = math.inf
    ws = Workspace()
    for _ in range(2 if pooled else 1):
        with ws.session() if pooled else contextlib.nullcontext():
            peaks = [p.float() for p in _max_abs(grads)]
        assert bool(torch.isfinite(torch.stack(peaks)).all()) is (bad_at is None)
        if bad_at is None:  # the largest peak is the largest |entry|
            assert max(p.item() for p in peaks) == max(x.abs().max().float().item() for x in grads)
