"""Momentum: the EMA ("lerp") and sum forms, with or without Nesterov.

For orthogonalized updates the two forms are the same direction: the sum buffer is ``1/(1-beta)``
times the EMA buffer and the orthogonalizer is invariant to positive scale (optimizers.md §2).
They differ for stages that read magnitudes (NAMO's norm ratio), hence the switch.
"""

from __future__ import annotations

import torch

from ..orth import workspace
from .base import Stack


def nesterov(stack: Stack) -> None:
    """Momentum on the update, state key ``momentum``.

    Group keys: ``momentum`` (beta), ``nesterov`` (bool), ``momentum_form`` (``"ema"`` | ``"sum"``).

    EMA:  ``M <- beta M + (1 - beta) U``;  Nesterov: ``U <- (1 - beta) U + beta M``, else ``U <- M``.
    Sum:  ``M <- beta M + U``;             Nesterov: ``U <- U + beta M``,            else ``U <- M``.
    """
    beta = stack.group["momentum"]
    g = stack.update
    # Gated: on a skipped step g is zero and the coefficients are (1, 0), so M keeps its values.
    M = stack.buffer("momentum", gated=True)
    if stack.group.get("momentum_form", "ema") == "sum":
        M.mul_(stack.keep(beta, M)).add_(g)
        stack.update = g + beta * M if stack.group["nesterov"] else M
    else:
        M.lerp_(g, stack.take(1 - beta, M))
        stack.update = torch.lerp(g, M, beta, out=workspace.out_like(g)) if stack.group["nesterov"] else M
