"""Adam moments with bias correction (the AdamW part of every optimizer).

Matches ``torch.optim.AdamW`` operation for operation:
``m <- lerp(m, g, 1-b1)``, ``v <- b2 v + (1-b2) g^2``,
``u = m / (sqrt(v) / sqrt(1-b2^t) + eps)``, step size ``lr / (1-b1^t)``.
"""

from __future__ import annotations

import math

import torch

from .base import Stack


def adam(stack: Stack) -> None:
    """Adam direction; state keys ``exp_avg`` and ``exp_avg_sq``. Group keys ``betas``, ``eps``."""
    beta1, beta2 = stack.group["betas"]
    m = stack.buffer("exp_avg")
    v = stack.buffer("exp_avg_sq")
    # Saturate g at C = sqrt(finfo.max) / 2 (fp32: 9.2e18) before both moments: g^2 then never
    # overflows, and m and v saturate *together*, so m / sqrt(v) -- Adam's scale-invariant ratio --
    # stays ~1 and a 1e30 gradient moves a weight by ~lr, not by 1e6 lr. Below C nothing changes.
    C = math.sqrt(torch.finfo(m.dtype).max) / 2
    g = stack.update.clamp(-C, C)
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    t = stack.per_item(stack.step)
    bias1 = 1 - torch.pow(beta1, t)
    bias2 = 1 - torch.pow(beta2, t)
    # One temporary instead of four: denom <- sqrt(v) / sqrt(bias2) + eps, then m / denom in place.
    denom = v.sqrt().div_(bias2.sqrt()).add_(stack.group["eps"])
    stack.update = torch.div(m, denom, out=denom)
    stack.step_size = stack.step_size / bias1
