"""Learning-rate schedules for benchmark runs: linear warmup, then cosine / linear decay / constant.

A schedule is a multiplier ``f(step) in [min_lr_ratio, 1]`` applied through
``torch.optim.lr_scheduler.LambdaLR`` so that *every* param group of the optimizer (the orthogonalized
matrices and the AdamW part alike) is scaled by the same factor, as in the NAMO GPT-2 setup where
the schedule "multiplies every param group's lr, including the AdamW backup".

Steps are counted from 0: the factor ``f(t)`` is the one used by the ``t``-th optimizer step
(``t = 0`` is the first step). Warmup is linear, ``f(t) = (t + 1) / warmup`` for ``t < warmup``, so the
first step is never taken at lr 0.

References:
    Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", arXiv 1608.03983
    (cosine annealing). NAMO (arXiv 2602.17080), official GPT-2 code ``get_lr_ratio``: linear warmup,
    then constant or a linear decay to ``min_lr_ratio = 0.1``, multiplying every param group's lr.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("warmup_cosine", "linear_decay", "constant")


def lr_factor(step: int, total: int, kind: str = "warmup_cosine", warmup: int = 0,
              min_lr_ratio: float = 0.0) -> float:
    """The lr multiplier for optimizer step ``step`` (0-based) of a run of ``total`` steps.

    Args:
        step: 0-based index of the optimizer step.
        total: total number of optimizer steps in the run.
        kind: ``"warmup_cosine"``, ``"linear_decay"`` or ``"constant"``.
        warmup: number of linear-warmup steps (applies to every kind).
        min_lr_ratio: final multiplier reached at the last step by the decaying schedules.

    Returns:
        The multiplier in ``[0, 1]``.

    Raises:
        ValueError: on an unknown ``kind`` or out-of-range arguments (the message names them).
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule kind must be one of {SCHEDULES}, got {kind!r}")
    if total < 1:
        raise ValueError(f"total must be >= 1, got {total}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    # Progress through the decay phase: 0 at the first post-warmup step, 1 at the last step.
    span = max(total - 1 - warmup, 1)
    progress = min(max((step - warmup) / span, 0.0), 1.0)
    if kind == "linear_decay":
        shape = 1.0 - progress
    else:
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def make_scheduler(optimizer: torch.optim.Optimizer, total: int, kind: str = "warmup_cosine",
                   warmup: int = 0, min_lr_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_factor` to every param group of ``optimizer``.

    Call ``scheduler.step()`` once after each ``optimizer.step()``. Validates its arguments eagerly.
    """
    lr_factor(0, total, kind, warmup, min_lr_ratio)  # validate before touching the optimizer
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: lr_factor(t, total, kind, warmup, min_lr_ratio))
