"""Fast paths equal their plain references: the in-place AdamW part and the orthogonalizer kernels."""

from __future__ import annotations

import pytest
import torch

import muonlab
from muonlab.stages.adam import fused_applies
from tests.reference.adamw import adamw_step

F32, F64 = torch.float32, torch.float64
# a large tensor (>= 2^16 entries: saturated alone) and small ones (saturated by foreach calls)
SHAPES = [(300, 257), (64, 33), (7,), (1,), (5, 4, 3)]
HP = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


def _params(dtype=F32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in SHAPES]


def _grads(params, t):
    g = torch.Generator().manual_seed(100 + t)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]


def _run(params, opt, steps):
    for t in range(steps):
        for p, gr in zip(params, _grads(params, t)):
            p.grad = gr
        opt.step()


def test_adamw_part_is_torch_fused_adamw_bitwise():
    """muonlab.AdamW on fp32 parameters == torch.optim.AdamW(fused=True), bitwise, over 10 steps."""
    ours, ref = _params(), _params()
    _run(ours, muonlab.AdamW(ours, **HP), 10)
    _run(ref, torch.optim.AdamW(ref, fused=True, **HP), 10)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)


def test_adamw_part_within_ulps_of_torch_foreach_adamw():
    """vs torch.optim.AdamW(foreach=True), fp32: one step within 1 ulp of W plus 2 ulp of lr; ten within 1e-6."""
    eps = torch.finfo(F32).eps
    for steps in (1, 10):
        ours, ref = _params(), _params()
        _run(ours, muonlab.AdamW(ours, **HP), steps)
        _run(ref, torch.optim.AdamW(ref, foreach=True, **HP), steps)
        for a, b in zip(ours, ref):
            a, b = a.detach(), b.detach()
            if steps == 1:  # torch's fused and foreach kernels round the same formula differently
                assert ((a - b).abs() <= eps * b.abs() + 2 * eps * HP["lr"]).all()
            else:
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_adamw_part_equals_fp64_reference_loop():
    """fp64: the in-place path equals the plain per-parameter loop from the paper to 1e-13 over 20 steps."""
    ours = _params(F64)
    ref = [p.detach().clone() for p in ours]
    ms = [torch.zeros_like(p) for p in ref]
    vs = [torch.zeros_like(p) for p in ref]
    opt = muonlab.AdamW(ours, **HP)
    for t in range(20):
        grads = _grads(ours, t)
        for p, gr in zip(ours, grads):
            p.grad = gr
        opt.step()
        for W, G, m, v in zip(ref, grads, ms, vs):
            adamw_step(W, G, m, v, t + 1, **HP)
    for a, b, m, v in zip(ours, ref, ms, vs):
        torch.testing.assert_close(a.detach(), b, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(opt.state[a]["exp_avg"], m, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(opt.state[a]["exp_avg_sq"], v, rtol=1e-13, atol=1e-15)


def test_adamw_part_runs_in_place_without_stacking():
    """fp32 AdamW state is standalone per-parameter tensors (no stacked buffer behind them), grads untouched."""
    params = _params()
    opt = muonlab.AdamW(params, **HP)
    assert fused_applies(params)
    _run(params, opt, 1)
    grads = [p.grad.clone() for p in params]
    opt.step()
    assert opt._stack_cache == {}
    for p, g in zip(params, grads):
        st = opt.state[p]
        assert set(st) == {"step", "exp_avg", "exp_avg_sq"}
        assert st["exp_avg"]._base is None and st["exp_avg_sq"]._base is None
        assert st["step"].shape == () and st["step"].dtype == p.dtype and float(st["step"]) == 2.0
        assert st["exp_avg"].shape == p.shape and st["exp_avg"].dtype == p.dtype
        assert torch.equal(p.grad, g)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).view(torch.int32 if t.dtype == F32 else torch.int64).clone()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_skipped_step_leaves_params_and_state_bitwise(bad):
    """nonfinite='skip': a NaN/Inf gradient leaves every parameter and state tensor bitwise unchanged."""
    params = _params()
    opt = muonlab.Muon([{"params": params[:1]}, {"params": params[1:], "algorithm": "adamw"}], adamw_weight_decay=0.1)
    _run(params, opt, 2)
    before = [_bits(p) for p in params]
    state = [{k: _bits(v) for k, v in opt.state[p].items()} for p in params]
    grads = _grads(params, 5)
    grads[2][3] = bad  # only one small AdamW parameter is bad: all must stay
    for p, gr in zip(params, grads):
        p.grad = gr
    opt.step()
    assert opt.skipped_steps == 1
    for p, b, st in zip(params, before, state):
        assert torch.equal(_bits(p), b)
        assert all(torch.equal(_bits(opt.state[p][k]), v) for k, v in st.items())
    _run(params, opt, 1)  # and the next good step runs as step 3
    assert float(opt.state[params[1]]["step"]) == 3.0


def test_bf16_params_keep_fp32_state_on_the_stack_path():
    """bf16 parameters are not fused (their state stays fp32) and still step."""
    params = [torch.nn.Parameter(torch.randn(8, 3).bfloat16())]
    assert not fused_applies(params)
    opt = muonlab.AdamW(params, **HP)
    before = params[0].detach().clone()
    params[0].grad = torch.randn(8, 3).bfloat16()
    opt.step()
    assert opt.state[params[0]]["exp_avg"].dtype == F32
    assert not torch.equal(params[0].detach(), before)


def test_state_dict_round_trip_in_place_path():
    """A state dict of the in-place path loads into a fresh optimizer, which then steps bitwise alike."""
    params = _params()
    opt = muonlab.AdamW(params, **HP)
    _run(params, opt, 3)
    sd = opt.state_dict()
    twin = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = muonlab.AdamW(twin, **HP)
    opt2.load_state_dict(sd)
    _run(params, opt, 2)
    _run(twin, opt2, 2)
    for a, b in zip(params, twin):
        assert torch.equal(a, b)


@pytest.mark.parametrize("preset", ["Muon", "NAMO"])
def test_step_memo_shares_coefficients_bitwise(preset, monkeypatch):
    """Stack.memo: the stacks of a step share their 0-D hyperparameters and gated coefficients.

    Two groups of the same matrix shapes with different lr / momentum (a memo keyed without the group
    would mix them), a skipped step (NaN gradient) and an lr changed between steps: bitwise the run
    in which every stack makes its own, with fewer dispatches per step.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    import muonlab.optim.shell as shell
    from muonlab.stages.base import Stack

    class OwnMemo(Stack):
        def __post_init__(self) -> None:
            super().__post_init__()
            self.memo = None

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    def run(stack_cls):
        monkeypatch.setattr(shell, "Stack", stack_cls)
        g = torch.Generator().manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(16, 8), (8, 24), (16, 8), (8, 24), (8,)]]
        opt = getattr(muonlab, preset)([
            {"params": ps[:2], "lr": 0.02, "momentum": 0.9},
            {"params": ps[2:4], "lr": 0.05, "momentum": 0.8},
            {"params": ps[4:], "algorithm": "adamw"},
        ])
        ops = []
        for t in range(7):
            for p in ps:
                p.grad = torch.randn(p.shape, generator=g)
            if t == 3:
                ps[1].grad[0, 0] = float("nan")  # skipped: every stack's state and weights stay
            if t == 5:
                opt.param_groups[0]["lr"] = 0.01
            Count.n = 0
            with Count():
                opt.step()
            ops.append(Count.n)
        return ps, opt, ops

    shared, opt_a, ops_a = run(Stack)
    own, opt_b, ops_b = run(OwnMemo)
    assert opt_a.skipped_steps == opt_b.skipped_steps == 1
    for a, b in zip(shared, own):
        assert torch.equal(a, b)
        for key, value in opt_a.state[a].items():
            assert torch.equal(value, opt_b.state[b][key]), key
    assert ops_a[-1] < ops_b[-1]


def test_adamw_part_is_one_fused_call_for_all_shapes(monkeypatch):
    """The in-place AdamW path takes a group's parameters of every shape in one fused call per dtype and device;
    bf16 parameters (no fused kernel) keep their same-shape stacks beside it."""
    calls = []
    fused = torch._fused_adamw_

    def counting(params, *args, **kwargs):
        calls.append(len(params))
        return fused(params, *args, **kwargs)

    monkeypatch.setattr(torch, "_fused_adamw_", counting)
    ps = _params() + [torch.nn.Parameter(torch.randn(4, 3, dtype=torch.bfloat16)) for _ in range(2)]
    opt = muonlab.AdamW(ps, **HP)
    _run(ps, opt, 2)
    assert calls == [len(SHAPES)] * 2
    kinds = sorted((b.shape, len(b.params)) for b in opt._buckets(opt.param_groups[0]))
    assert kinds == [((), len(SHAPES)), ((4, 3), 2)]
