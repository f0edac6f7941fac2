"""Schedule-free averaging around any base step (Defazio et al.'s primal averaging with interpolation).

A schedule-free optimizer keeps three points per parameter:

* ``z``, the *fast iterate*, moved by the base optimizer's step (here: the chain before this stage,
  with its decoupled weight decay acting on ``z``);
* ``x``, the *average*, ``x <- (1 - c) x + c z`` with ``c_t = lr_t^2 / sum_{s<=t} lr_s^2``;
* ``y = (1 - beta) z + beta x``, the *interpolation point*, where the gradient is taken.

The model's parameters hold ``y`` while training (the optimizer's ``train()`` mode) and ``x`` for
evaluation (``eval()`` mode); the state holds ``z`` only, so ``x`` is recovered from ``(y, z)``.

This stage runs last in a chain. The stages before it left the base step in ``stack.decay`` (the
factor ``1 - lr wd``) and ``stack.step_size * stack.update``; it applies that step to ``z`` instead of
the weights and hands the shell the write that moves the parameters from ``y_t`` to ``y_{t+1}``.
With ``D = decay``, ``S = warmup(t) * step_size * update`` and ``B = 1 - beta + beta c``::

    z_{t+1} = D z_t - S
    x_{t+1} = (1 - c) x_t + c z_{t+1}
    y_{t+1} = (1 - beta) z_{t+1} + beta x_{t+1}
            = (1 - c) y_t + (B D - (1 - c)(1 - beta)) z_t - B S        # x_t eliminated: no 1/beta

so the shell's ``W <- W * decay - step_size * update`` is used with ``decay = 1 - c`` and
``update = B S - (B D - (1 - c)(1 - beta)) z_t``. On the first step ``c = 1`` and ``z_1 = y_1``:
the first move is exactly the base step.

References:
    Defazio, Yang, Mehta, Mishchenko, Khaled, Cutkosky, "The Road Less Scheduled", arXiv 2405.15682
    (NeurIPS 2024); code https://github.com/facebookresearch/schedule_free.
    Apte, Deshpande, Kumar, Chakrabarti, Kim, "Anytime Training with Schedule-Free Spectral
    Optimization", arXiv 2605.23061 (weight decay at the fast iterate; averaging weights lr_t^2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Stack

#: state key of the fast iterate z (matrix view of the parameter) and of sum_s lr_s^2 (one per matrix)
Z_KEY = "sf.z"
WEIGHT_SUM_KEY = "sf.lr_sq_sum"


def warmup_factor(stack: Stack) -> Tensor | float:
    """``min(1, t / warmup_steps)`` per matrix, ``(k, 1, ..)``; 1 without warmup."""
    T = stack.group["warmup_steps"]
    if T == 0:
        return 1.0
    return stack.per_item(torch.clamp(stack.step / T, max=1.0))


def schedule_free(stack: Stack) -> None:
    """Apply the chain's step to the fast iterate ``z`` and average (state ``sf.z``, ``sf.lr_sq_sum``).

    Group keys: ``lr``, ``sf_momentum`` (``beta``, the interpolation weight of ``x`` in ``y``),
    ``warmup_steps`` (linear warmup of the step taken by ``z`` and of the averaging weights; the
    weight decay factor keeps the base lr, as the paper's update ``z <- z - lr wd z - lr_t P`` writes).

    .. code-block:: text

        lr_t = lr * min(1, t / warmup_steps)
        s   <- s + lr_t^2 ;  c = lr_t^2 / s          (c = 0 while every lr so far is 0)
        z   <- (1 - lr wd) z - (lr_t / lr) * step
        y   <- (1 - c) y + (B D - (1 - c)(1 - beta)) z_old - B S,   B = 1 - beta + beta c
    """
    beta = stack.group["sf_momentum"]
    w = warmup_factor(stack)
    lr_t = stack.hp("lr") * w  # 0-D or (k, 1, ..)
    lr_sq = (lr_t * lr_t).expand(stack.k, *([1] * (stack.grad.dim() - 1)))  # (k, 1, ..)
    s = stack.per_item(stack.buffer(WEIGHT_SUM_KEY, ""))
    s.add_(lr_sq)
    c = torch.where(s > 0, lr_sq / torch.where(s > 0, s, 1.0), 0.0)  # (k, 1, ..); 0 / 0 never formed
    z = stack.buffer(Z_KEY)  # (k, m, n) or (k, *shape): holds z_t, the shell's write needs it
    D = torch.as_tensor(stack.decay, dtype=z.dtype, device=z.device)
    S = (w * stack.step_size) * stack.update  # the base step, lr warmup included
    B = 1 - beta + beta * c
    A = B * D - (1 - c) * (1 - beta)
    stack.update = B * S - A * z  # computed from z_t before z moves
    z.mul_(D).sub_(S)
    stack.decay = 1 - c
    stack.step_size = 1.0


def to_average(y: Tensor, z: Tensor, beta: float) -> Tensor:
    """``x = (y - (1 - beta) z) / beta`` (train -> eval), as ``lerp(y, z, 1 - 1/beta)``."""
    return torch.lerp(y, z, 1 - 1 / beta)


def to_interpolation(x: Tensor, z: Tensor, beta: float) -> Tensor:
    """``y = (1 - beta) z + beta x`` (eval -> train), as ``lerp(x, z, 1 - beta)``."""
    return torch.lerp(x, z, 1 - beta)
