"""NGN-M: the NGN step size with heavy-ball momentum, and its use as a scalar lr for Muon.

NGN (Orvieto & Xiao) takes a Gauss-Newton step on ``sqrt(f)`` with a proximal term ``1/(2c)``,
which gives the step size

    gamma_k = c / (1 + c ||g_k||^2 / (2 f_k))  =  2 c f_k / (2 f_k + c ||g_k||^2)        (f_k >= 0)

one scalar per step, with ``||g||^2`` over every parameter the method steps: ``gamma <= c`` always,
and ``gamma ~ 2 f / ||g||^2`` (a Polyak-like step) once ``c ||g||^2 >> 2 f``. NGN-M (Islamov et al.,
Algorithm 1) adds heavy-ball momentum,

    x_{k+1} = x_k - (1 - beta) gamma_k g_k + beta (x_k - x_{k-1}),     x_{-1} = x_0,

run here in its buffer form ``d <- beta d + (1 - beta) gamma_k g_k ; x <- x - d`` (``d_0 = 0``).

The scalar ``gamma_k`` is computed once per step by the optimizer (it needs the loss and a global
gradient norm, :func:`ngn_step_size`) and reaches the stages as the 0-D tensor ``group["ngn.gamma"]``.

``direction="muon"`` (a muonlab extension, **not in the paper**): Muon's update (Nesterov momentum,
orthogonalized, shape factor) with its constant lr replaced by ``gamma_k``; ``c`` (the group lr) is
then the largest lr the controller allows.

References:
    Islamov, Ajroldi, Orvieto, Lucchi, "Enhancing Optimizer Stability: Momentum Adaptation of the
    NGN Step-size", arXiv 2508.15071 (NeurIPS 2025), Algorithm 1.
    Orvieto & Xiao, "An Adaptive Stochastic Gradient Method with Non-negative Gauss-Newton
    Stepsizes", arXiv 2407.04358 (NGN).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Stack
from .momentum import nesterov
from .orthogonalize import orthogonalize
from .scale import scale_by_shape

#: values of the group key ``direction``
DIRECTIONS = ("sgd", "muon")
#: group key of the step's 0-D gamma tensor (set by the optimizer for the duration of a step)
GAMMA_KEY = "ngn.gamma"


def ngn_step_size(c: float, loss: Tensor, grad_sq: Tensor) -> Tensor:
    """``gamma = 2 c f / (2 f + c ||g||^2)`` on the device (0-D), the NGN step size.

    Written as one fraction so that a huge gradient norm (``inf`` in fp32) gives ``gamma = 0``, not
    NaN; a negative loss is clamped to 0 (NGN assumes ``f >= 0``), and ``f = ||g|| = 0`` (a
    stationary point of a zero loss) gives ``gamma = 0``, where any step is a zero move. A
    non-finite loss gives NaN (the step is then skipped or propagated, per ``nonfinite``).
    """
    f = loss.clamp_min(0)
    den = 2 * f + c * grad_sq
    gamma = torch.where(den > 0, 2 * c * f / torch.where(den > 0, den, 1.0), 0.0)
    return torch.where(torch.isfinite(loss), gamma, torch.nan)  # a NaN / Inf loss is not a zero step


def ngn_update(stack: Stack) -> None:
    """NGN-M's update of the stack; state ``ngn.d`` (``direction="sgd"``) or ``momentum`` (``"muon"``).

    Group keys: ``ngn.gamma`` (set per step), ``momentum`` (beta), ``direction``, and for ``"muon"``
    the orthogonalizer keys and ``adjust_lr``.

    .. code-block:: text

        sgd:   d <- beta d + (1 - beta) gamma g ;  W <- W - d
        muon:  M <- beta M + (1 - beta) g ;  U = (1 - beta) g + beta M ;  W <- W - gamma s(m, n) Orth(U)
    """
    group = stack.group
    gamma = group[GAMMA_KEY].to(stack.grad.dtype)
    if stack.gate is not None:
        # nonfinite="skip": a non-finite loss skips the step as a non-finite gradient does (state
        # restored, identity write); set before any buffer is taken, so the buffers are snapshotted.
        stack.gate = stack.gate & torch.isfinite(gamma)
    if group["direction"] == "muon":
        nesterov(stack)
        orthogonalize(stack)
        stack.step_size = gamma
        scale_by_shape(stack)
        return
    beta = group["momentum"]
    d = stack.buffer("ngn.d")  # (k, m, n)
    d.mul_(beta).add_(gamma * (1 - beta) * stack.update)
    stack.update = d
    stack.step_size = 1.0
