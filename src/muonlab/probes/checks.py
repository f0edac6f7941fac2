"""The probes of the update math: groups, scheduler, momentum, decay, Adam.

A probe is ``probe(cls, kwargs) -> str | None``: ``None`` when the property holds, else the reason it
does not (what moved, by how much, against what was expected). Every criterion is chosen to hold for
every family in the registry (orthogonal presets with plain decoupled decay, the adaptive NAMO /
NAMO-D / AdaGO / TrasMuon stepsizes, and AdamW) and to fail on the broken variant named in its
docstring; ``tests/test_probes.py`` builds each broken variant and checks that it fails. The
routing and resume probes are in :mod:`muonlab.probes.plumbing`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..stages import decay_weights
from ..stages.error_feedback import ERROR_KEY, enabled as error_feedback
from . import problem as P


def probe_groups(cls: type, kwargs: dict[str, Any]) -> str | None:
    """Every group is stepped: after one step with nonzero gradients every parameter moved, by a finite amount.

    Breaks on: a step that skips a group (an ``algorithm`` the step forgets, an off-by-one in a loop).
    """
    opt, params = P.build(cls, kwargs)
    moves = P.step_with(opt, params, P.random_grads(0))
    for i, group, name in P.members(opt, params):
        if not bool(torch.isfinite(moves[name]).all()):
            return f"{P.where(i, group, name)} moved by a non-finite amount"
        if not bool((moves[name] != 0).any()):
            return f"{P.where(i, group, name)} did not move after a step with nonzero gradients"
    return None


def _scheduled(cls: type, kwargs: dict[str, Any], factors: list[float]) -> tuple[P.Members, list[dict[str, Tensor]]]:
    """Moves of ``len(factors)`` steps under ``LambdaLR`` with factor ``factors[epoch]``."""
    opt, params = P.build(cls, kwargs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: factors[min(e, len(factors) - 1)])
    moves = []
    for t in range(len(factors)):
        moves.append(P.step_with(opt, params, P.random_grads(t)))
        sched.step()
    return P.members(opt, params), moves


def probe_scheduler(cls: type, kwargs: dict[str, Any]) -> str | None:
    """An lr scheduler reaches every group, at the first step and later.

    * ``LambdaLR`` at 0.5 from the start: every group's first move is exactly half the full-lr move
      (rtol 1e-9; the first step of every family is proportional to lr, decoupled decay included);
    * ``LambdaLR`` 1 then 0.5: every group's second move has 0.25-0.75 times the norm of the full-lr
      second move (not exactly 0.5: TrasMuon's schedule-free gate averages past gates weighted by lr^2).

    Presets whose move is not proportional to lr (class attribute ``lr_proportional = False``: Pion's
    rotation is quadratic in lr, NGNM's step size saturates in it) are held to less: both moves
    under the scheduler must differ from the full-lr moves (relative difference > 1e-6).

    Breaks on: an optimizer that reads lr once (at construction or at the first step), or from
    ``defaults`` instead of the group.
    """
    members, full = _scheduled(cls, kwargs, [1.0, 1.0])
    _, first = _scheduled(cls, kwargs, [0.5])
    _, later = _scheduled(cls, kwargs, [1.0, 0.5])
    if not getattr(cls, "lr_proportional", True):
        for i, group, name in members:
            for label, moved, ref in (("first", first[0], full[0]), ("second", later[1], full[1])):
                if P.rel(moved[name], ref[name]) <= 1e-6:
                    return (f"{P.where(i, group, name)}: LambdaLR x0.5 left the {label} move unchanged "
                            "(scheduler.step() did not reach the group)")
        return None
    for i, group, name in members:
        if P.rel(first[0][name], 0.5 * full[0][name]) > 1e-9:
            ratio = float(first[0][name].norm() / full[0][name].norm())
            return (f"{P.where(i, group, name)}: LambdaLR x0.5 from the start gave {ratio:.6g}x the full-lr first "
                    "move, expected exactly 0.5x")
        ratio = float(later[1][name].norm() / full[1][name].norm())
        if not 0.25 <= ratio <= 0.75:
            return (f"{P.where(i, group, name)}: LambdaLR 1 -> 0.5 gave {ratio:.6g}x the full-lr second move, "
                    "expected ~0.5x (scheduler.step() did not reach the group)")
    return None


def _has_momentum(group: dict[str, Any]) -> bool:
    if group["algorithm"] == "adamw":
        return group["betas"][0] > 0
    return group.get("momentum", 0) > 0


def forget_residuals(opt: Any) -> None:
    """Zero the error-feedback residual of every group that has one (``error_feedback=True``).

    The residual remembers the part of the first step that was not applied, by design and at any
    momentum (docs/optimizers/error_feedback.md); cleared between the two steps, the only memory of
    the first gradient left is the momentum's, so the momentum probe tests what it tests elsewhere.
    """
    for group in opt.param_groups:
        if group.get("algorithm") != "adamw" and error_feedback(group):
            for p in group["params"]:
                E = opt.state[p].get(ERROR_KEY)
                if E is not None:
                    E.zero_()  # a view into the stacked buffer: the next step reads the zeros


def _second_moves(cls: type, kwargs: dict[str, Any], sign: float, no_momentum: bool
                  ) -> tuple[P.Members, dict[str, Tensor]]:
    """Moves of the second step after a first gradient ``sign * g0`` (momentum zeroed in the groups if asked)."""
    # Weight decay 0: a decayed second step would remember W1, which depends on the first gradient's sign
    opt, params = P.build(cls, kwargs, extra={"weight_decay": 0.0})
    if no_momentum:  # hyperparameters are data: set in the groups, read at every step
        for group in opt.param_groups:
            if group["algorithm"] == "adamw":
                group["betas"] = (0.0, group["betas"][1])
            elif "momentum" in group:
                group["momentum"] = 0.0
    P.step_with(opt, params, {n: sign * g for n, g in P.random_grads(0).items()})
    forget_residuals(opt)
    # A small second gradient, so that the history dominates its direction (AdaMuon takes the sign of
    # the Nesterov mix before orthogonalizing: a second gradient as large as the first may keep every sign).
    return P.members(opt, params), P.step_with(opt, params, P.random_grads(1, scale=0.1))


def probe_momentum(cls: type, kwargs: dict[str, Any]) -> str | None:
    """Momentum is applied and its coefficient is read: the second step remembers the first gradient.

    Two runs whose first gradients are ``+g0`` and ``-g0`` and whose second gradients are the same
    (``0.1 g1``): in every group with momentum (``momentum > 0``; AdamW: ``beta1 > 0``) the second
    moves differ (relative difference > 1e-3). Second moments, norms and row/column statistics are
    even in ``g0``, so only a first moment can tell the runs apart: with the momentum set to 0 in the
    groups the second moves agree to 1e-12. (A zero second gradient would not do: AdaGO's step size is
    proportional to the current gradient's norm.) Weight decay is 0 here (the decay probe checks it).
    Error-feedback residuals are zeroed between the two steps (:func:`forget_residuals`): they remember
    the first step at any momentum, by design, and would otherwise hide a missing momentum stage.

    Breaks on: a chain without its momentum stage; a momentum stage that ignores the group's coefficient.
    """
    members, plus = _second_moves(cls, kwargs, 1.0, False)
    _, minus = _second_moves(cls, kwargs, -1.0, False)
    _, plus0 = _second_moves(cls, kwargs, 1.0, True)
    _, minus0 = _second_moves(cls, kwargs, -1.0, True)
    for i, group, name in members:
        if not _has_momentum(group):
            continue
        if P.rel(plus[name], minus[name]) <= 1e-3:
            return (f"{P.where(i, group, name)}: the second step is the same after a first gradient +g0 or -g0 "
                    f"(relative difference {P.rel(plus[name], minus[name]):.2g}): momentum is not applied")
        if P.rel(plus0[name], minus0[name]) > 1e-12:
            return (f"{P.where(i, group, name)}: with momentum 0 in the group the second step still depends on the "
                    f"first gradient's sign (relative difference {P.rel(plus0[name], minus0[name]):.2g}): the "
                    "group's momentum coefficient is not what is applied")
    return None


def _decayed(cls: type, kwargs: dict[str, Any], wd: float) -> tuple[P.Members, dict[str, Tensor], dict[str, Tensor]]:
    opt, params = P.build(cls, kwargs, extra={"weight_decay": wd})
    before = P.snapshot(params)
    P.step_with(opt, params, P.random_grads(0))
    return P.members(opt, params), before, P.snapshot(params)


def plain_decay(cls: type, group: dict[str, Any]) -> bool:
    """Whether ``group`` decays by ``1 - lr * wd`` (AdamW groups, and chains that hold ``decay_weights``)."""
    return group["algorithm"] == "adamw" or decay_weights in getattr(cls, "chain", ())


def probe_decay(cls: type, kwargs: dict[str, Any]) -> str | None:
    """Decoupled weight decay is applied once, with the documented factor.

    One step with the same gradient at ``weight_decay`` 0, ``wd`` and ``2 wd`` (wd = 0.2, set in every
    group). Decoupled decay only rescales the weights, so ``W(0) - W(wd) = c * W0`` with the shrink
    ``c = 1 - decay``:

    * AdamW groups and chains with ``decay_weights``: ``c == lr * wd`` (rtol 1e-9); twice would give
      ``2 lr wd - (lr wd)^2``;
    * adaptive decay (NAMO / NAMO-D: ``1 - wd * rate`` with a rate from the adaptive step, per matrix or
      per column): ``0 < c <= 1`` and ``c(2 wd) == 2 c(wd)`` (rtol 1e-6): the decay is linear in wd, which
      a decay applied twice, ``(1 - wd rate)^2``, is not.

    Breaks on: no decay; decay applied twice; decay with the shape-adjusted lr.
    """
    wd = 0.2
    members, W0, W_none = _decayed(cls, kwargs, 0.0)
    _, _, W_once = _decayed(cls, kwargs, wd)
    _, _, W_twice = _decayed(cls, kwargs, 2 * wd)
    for i, group, name in members:
        c1 = (W_none[name] - W_once[name]) / W0[name]
        c2 = (W_none[name] - W_twice[name]) / W0[name]
        where = P.where(i, group, name)
        if plain_decay(cls, group):
            expected = group["lr"] * wd
            if float((c1 - expected).abs().max()) > 1e-9 * expected:
                return (f"{where}: weight_decay={wd} shrank the weights by factor {1 - float(c1.mean()):.9g}, "
                        f"expected 1 - lr*wd = {1 - expected:.9g}")
        elif not bool((c1 > 0).all() and (c1 <= 1).all()):
            return (f"{where}: weight_decay={wd} did not shrink every weight (shrink {float(c1.min()) + 0.0:.3g} .. "
                    f"{float(c1.max()) + 0.0:.3g}, expected in (0, 1])")
        elif P.rel(c2, 2 * c1) > 1e-6:
            ratio = float(c2.mean() / c1.mean())
            return (f"{where}: the shrink is not linear in weight_decay (x{ratio:.6g} for 2x wd, expected exactly 2): "
                    "decay applied more than once?")
    return None


def probe_adam(cls: type, kwargs: dict[str, Any]) -> str | None:
    """The AdamW part is Adam, not SGD: a first step moves each weight by about lr at any gradient scale.

    Adam's first step is ``lr * g / (|g| + eps)``; with ``|g|`` in ``[0.5, 1.5] * scale`` for scale
    1e-3, 1e3 and 1e30 (weight decay 0) every AdamW-group entry must move by 0.5-2 lr. SGD would move
    it by ``lr * |g|``.

    Breaks on: an AdamW chain without the Adam stage, or with its moments mis-scaled.
    """
    for scale in (1e-3, 1e3, 1e30):
        opt, params = P.build(cls, kwargs, extra={"weight_decay": 0.0})
        moves = P.step_with(opt, params, P.random_grads(0, scale=scale))
        for i, group, name in P.members(opt, params):
            if group["algorithm"] != "adamw":
                continue
            r = moves[name].abs() / group["lr"]
            if not bool(((r >= 0.5) & (r <= 2.0)).all()):
                return (f"{P.where(i, group, name)}: gradients of scale {scale:g} moved it by {float(r.min()):.3g} .. "
                        f"{float(r.max()):.3g} lr; Adam's first step is ~lr at any scale (SGD's is lr*|g|)")
    return None
