"""Error-feedback Muon: fp64 reference loop, virtual iterate, contraction, the convex Lipschitz stall."""

from __future__ import annotations

import math

import pytest
import torch

import muonlab
from muonlab.data.lipschitz import SignCounterexample
from muonlab.stages.error_feedback import ERROR_KEY
from tests import test_contract as contract
from tests import test_reliability as reliability
from tests.reference.error_feedback import ef_muon_step

SHAPES = [(6, 6), (9, 4), (3, 7), (1, 5), (4, 3, 3, 2)]
EF = {"error_feedback": True, "lr": 0.05}


def _view(s):
    return s[0], math.prod(s[1:])


@pytest.mark.parametrize("nesterov", [True, False])
def test_equals_reference_loop_fp64(nesterov):
    """fp64 EF-Muon (SVD) == the plain loop with (||P||_*/min(m,n)) polar(P) to 1e-10 over 20 steps, wd on."""
    hp = dict(lr=0.07, momentum=0.9, nesterov=nesterov, weight_decay=0.1)
    params = [torch.randn(*s, dtype=torch.float64, requires_grad=True) for s in SHAPES]
    ref = [p.detach().clone() for p in params]
    Ms = [torch.zeros(*_view(s), dtype=torch.float64) for s in SHAPES]
    Es = [torch.zeros(*_view(s), dtype=torch.float64) for s in SHAPES]
    opt = muonlab.Muon([{"params": params}], orthogonalizer="svd", error_feedback=True, **hp)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        grads = [torch.randn(*s, dtype=torch.float64, generator=g) for s in SHAPES]
        for p, G in zip(params, grads):
            p.grad = G.clone()
        opt.step()
        for i, G in enumerate(grads):
            ref[i], Ms[i], Es[i] = ef_muon_step(ref[i], G, Ms[i], Es[i], **hp)
    for p, r, E in zip(params, ref, Es):
        assert ((p.detach() - r).norm() / r.norm()).item() < 1e-10
        # relative to ||W||: the residual of a rank-1 matrix (1 x n) is 0 up to rounding
        assert ((opt.state[p][ERROR_KEY] - E).norm() / r.norm()).item() < 1e-10


def test_virtual_iterate_runs_sgd_with_momentum():
    """wd = 0: W_t - E_t == W_0 - lr sum_s U_s, the SGD-with-momentum iterate (the heart of the EF proof)."""
    W = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    W0 = W.detach().clone()
    opt = muonlab.Muon([{"params": [W]}], lr=0.1, momentum=0.8, nesterov=False, error_feedback=True)  # NS, fp64
    M, total = torch.zeros_like(W0), torch.zeros_like(W0)
    for _ in range(15):
        G = torch.randn(7, 4, dtype=torch.float64)
        W.grad = G.clone()
        opt.step()
        M = 0.8 * M + 0.2 * G
        total += M
    torch.testing.assert_close(W.detach() - opt.state[W][ERROR_KEY], W0 - 0.1 * total, rtol=1e-12, atol=1e-12)


def test_residual_contracts_by_one_over_rank():
    """One step from E = 0: ||E||^2 = ||P||^2 - ||P||_*^2 / min(m, n) <= (1 - 1/min(m, n)) ||P||^2."""
    for m, n in [(6, 6), (9, 4), (3, 7)]:
        W = torch.zeros(m, n, dtype=torch.float64, requires_grad=True)
        opt = muonlab.Muon([{"params": [W]}], lr=1.0, momentum=0.0, orthogonalizer="svd", error_feedback=True)
        G = torch.randn(m, n, dtype=torch.float64)
        W.grad = G.clone()
        opt.step()
        E, P = opt.state[W][ERROR_KEY], G
        k = min(m, n)
        expected = P.norm() ** 2 - torch.linalg.svdvals(P).sum() ** 2 / k
        assert E.norm().item() ** 2 == pytest.approx(expected.item(), rel=1e-10)
        assert E.norm().item() ** 2 <= (1 - 1 / k) * P.norm().item() ** 2 + 1e-12


def test_off_by_default_and_flag_validated():
    """error_feedback defaults to False (no residual state); a non-bool value raises ValueError naming it."""
    W = torch.randn(4, 4, requires_grad=True)
    opt = muonlab.Muon([{"params": [W]}])
    W.grad = torch.randn(4, 4)
    opt.step()
    assert opt.param_groups[0]["error_feedback"] is False and ERROR_KEY not in opt.state[W]
    with pytest.raises(ValueError, match="error_feedback"):
        muonlab.Muon([{"params": [W]}], error_feedback=1)


# ----------------------------------------------------------------------------- the stall
def _run_lipschitz(problem, steps, lr, schedule, **kw):
    W = problem.start().requires_grad_()
    opt = muonlab.Muon([{"params": [W]}], lr=lr, orthogonalizer="svd", **kw)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 if schedule == "constant" else 1 / math.sqrt(t + 1))
    best = math.inf
    for _ in range(steps):
        W.grad = None
        problem.loss(W).backward()
        opt.step()
        sched.step()
        best = min(best, problem.loss(W).item())
    return W.detach(), best


@pytest.mark.parametrize("schedule", ["constant", "inverse_sqrt"])
def test_muon_without_momentum_stalls_on_the_sign_counterexample(schedule):
    """Muon (momentum 0) never changes a_i + b_i, for any lr: f stays >= eps sum |a + b| (initial) at every step."""
    problem = SignCounterexample(pairs=4, eps=0.5, dtype=torch.float64)
    floor = problem.floor(problem.start())
    a0, b0 = problem.pair_values(problem.start())
    for lr in (1e-2, 0.1, 1.0, 3.0):
        W, best = _run_lipschitz(problem, 200, lr, schedule, momentum=0.0)
        a, b = problem.pair_values(W)
        torch.testing.assert_close(a + b, a0 + b0, rtol=0, atol=1e-9)
        assert best >= floor * (1 - 1e-9), (lr, best, floor)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_error_feedback_converges_where_muon_stalls(momentum):
    """EF-Muon (lr 0.3/sqrt(t), 300 steps) ends below 5% of the floor that Muon without momentum never crosses."""
    problem = SignCounterexample(pairs=4, eps=0.5, dtype=torch.float64)
    floor, f0 = problem.floor(problem.start()), problem.loss(problem.start()).item()
    W, _ = _run_lipschitz(problem, 300, 0.3, "inverse_sqrt", momentum=momentum, nesterov=False, error_feedback=True)
    final = problem.loss(W).item()
    assert final < 0.05 * floor < 0.03 * f0, (final, floor, f0)  # measured: 0.16 (momentum 0), 0.09 (0.9); floor 5.5


# ----------------------------------------------------------------------------- the generic contract
# error_feedback=True is not a registry sample (the momentum probe assumes that with momentum 0 no
# state remembers the first gradient's sign, which the residual does), so the contract and
# reliability checks run on it here.
@pytest.mark.parametrize("sched", [False, True])
def test_contract_goes_downhill(sched):
    """The contract suite's quadratic falls by 30% in 60 steps with error feedback on."""
    contract.test_goes_downhill(muonlab.Muon, EF, sched)


@pytest.mark.parametrize("check", ["test_state_dict_round_trip", "test_add_param_group", "test_grad_none_skipped",
                                   "test_zero_gradients_no_nan", "test_deterministic", "test_bf16_params_smoke"])
def test_contract_checks(check):
    """The generic contract checks (round trip, add_param_group, grad=None, zeros, determinism, bf16) with EF on."""
    getattr(contract, check)(muonlab.Muon, EF)


@pytest.mark.parametrize("kind", ["zero", "zero-columns", "huge"])
def test_contract_extreme_gradients(kind):
    """Zero, zero-column and 1e30 gradients keep parameters and the residual finite."""
    contract.test_extreme_gradients_stay_finite(muonlab.Muon, EF, kind)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_skip_leaves_residual_unchanged(bad):
    """nonfinite='skip': a NaN/Inf step changes no parameter and no state (the residual included)."""
    reliability.test_skip_leaves_every_value_unchanged(muonlab.Muon, EF, bad)


def test_bench_task_routes_the_matrix_to_the_orthogonal_group():
    """The 'lipschitz' bench task: W is a hidden matrix for param_groups, f(W_0) = 11 and the floor 5.5."""
    from muonlab.bench.tasks import make_task

    task = make_task("lipschitz")
    model = task.make_model(0)
    groups = muonlab.param_groups(model)
    (group,) = [g for g in groups if any(p is model.linear.weight for p in g["params"])]
    assert group["algorithm"] == "orthogonal"
    assert task.evaluate(model) == pytest.approx({"val_loss": 11.0, "floor": 5.5})


# ----------------------------------------------------------------------------- the registry entry and the probes
def test_muon_ef_is_muon_with_the_flag():
    """'muon-ef' is MuonEF: Muon with error_feedback=True by default, stepping exactly as Muon(error_feedback=True)."""
    assert muonlab.optimizers()["muon-ef"] is muonlab.MuonEF and issubclass(muonlab.MuonEF, muonlab.Muon)
    Ws = [torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
          for _ in range(2)]
    a = muonlab.MuonEF([{"params": [Ws[0]]}], lr=0.1)
    b = muonlab.Muon([{"params": [Ws[1]]}], lr=0.1, error_feedback=True)
    assert a.param_groups[0]["error_feedback"] is True
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        G = torch.randn(6, 4, dtype=torch.float64, generator=g)
        Ws[0].grad, Ws[1].grad = G.clone(), G.clone()
        a.step()
        b.step()
    assert torch.equal(Ws[0], Ws[1])


class _EFWithoutMomentumStage(muonlab.MuonEF):
    chain = tuple(s for s in muonlab.MuonEF.chain if s is not muonlab.stages.nesterov)


def _fixed_beta(stack):
    """Momentum with beta 0.95 whatever the group says."""
    group = stack.group
    stack.group = dict(group, momentum=0.95)
    try:
        muonlab.stages.nesterov(stack)
    finally:
        stack.group = group


class _EFIgnoresMomentumCoefficient(muonlab.MuonEF):
    chain = tuple(_fixed_beta if s is muonlab.stages.nesterov else s for s in muonlab.MuonEF.chain)


@pytest.mark.parametrize("cls,expected", [(_EFWithoutMomentumStage, "momentum is not applied"),
                                          (_EFIgnoresMomentumCoefficient, "coefficient is not what is applied")])
def test_momentum_probe_still_catches_broken_momentum_under_error_feedback(cls, expected):
    """The momentum probe clears EF residuals between its steps, so a missing or fixed momentum still fails it."""
    from muonlab.probes.checks import probe_momentum

    reason = probe_momentum(cls, {"lr": 0.1})
    assert reason is not None and expected in reason, reason


def test_residual_is_why_the_probe_clears_it():
    """Without clearing, EF at momentum 0 remembers the first gradient (the residual carries it), by design."""
    from muonlab.probes import checks
    from muonlab.probes import problem

    _, plus = checks._second_moves(muonlab.MuonEF, {"lr": 0.1}, 1.0, True)
    _, minus = checks._second_moves(muonlab.MuonEF, {"lr": 0.1}, -1.0, True)
    assert all(problem.rel(plus[k], minus[k]) <= 1e-12 for k in plus)  # cleared: no memory at momentum 0
    opt = muonlab.MuonEF([{"params": [torch.zeros(5, 3, dtype=torch.float64, requires_grad=True)]}], lr=0.1,
                         momentum=0.0)
    (W,) = opt.param_groups[0]["params"]
    W.grad = torch.randn(5, 3, dtype=torch.float64)
    opt.step()
    assert opt.state[W][ERROR_KEY].norm() > 0  # what the clearing removes


def test_first_move_is_exactly_proportional_to_lr_with_newton_schulz():
    """Direction stages see P/||P||: with NS (eps 1e-7) the first move at lr/2 is half the move at lr, to 1e-12."""
    moves = []
    for lr in (0.1, 0.05):
        W = torch.zeros(6, 4, dtype=torch.float64, requires_grad=True)
        opt = muonlab.MuonEF([{"params": [W]}], lr=lr, orthogonalizer="newton_schulz")
        W.grad = 1e-6 * torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
        opt.step()
        moves.append(W.detach().clone())
    assert ((moves[1] - 0.5 * moves[0]).norm() / moves[1].norm()).item() < 1e-12


def test_describe_marks_error_feedback_and_its_sgd_scale_lr():
    """describe(): an EF group is marked "+EF" and its effective lr is lr itself (the projection sets the size)."""
    import re

    W = torch.nn.Parameter(torch.randn(64, 16))  # tall: Muon's spectral factor sqrt(64 / 16) = 2
    plain, ef = (re.split(r"\s{2,}", cls([{"params": [W]}], lr=0.1).describe().splitlines()[2])
                 for cls in (muonlab.Muon, muonlab.MuonEF))
    assert ef[3].endswith("+EF") and not plain[3].endswith("+EF")
    assert (plain[4], plain[5]) == ("0.1", "0.2") and (ef[4], ef[5]) == ("0.1", "0.1")
