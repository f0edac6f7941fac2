"""Adam moments with bias correction (the AdamW part of every optimizer).

Two implementations of the same update, ``torch.optim.AdamW``'s:

* :func:`adam`, a stage: ``m <- lerp(m, g, 1-b1)``, ``v <- b2 v + (1-b2) g^2``,
  ``u = m / (sqrt(v) / sqrt(1-b2^t) + eps)``, step size ``lr / (1-b1^t)``, on a stack (used for
  mixed precision, e.g. bf16 parameters with fp32 state, and for FSDP2-sharded AdamW groups);
* :func:`adamw_inplace`, the fast path: in place over the parameters with no stacking, through
  torch's fused AdamW kernel (``torch._fused_adamw_``, one pass over p, g, m, v), used by the shell
  whenever the state has the parameters' dtype.

Both saturate the gradient at ``C = sqrt(finfo.max) / 2`` first (see :func:`saturation`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Stack

#: tensors at least this large are saturated one by one (one pass); smaller ones by two foreach calls
_LARGE = 1 << 16


def saturation(dtype: torch.dtype) -> float:
    """``C = sqrt(finfo.max) / 2`` (fp32: 9.2e18), the bound put on every gradient entry.

    g^2 then never overflows, and m and v saturate *together*, so m / sqrt(v) -- Adam's
    scale-invariant ratio -- stays ~1 and a 1e30 gradient moves a weight by ~lr, not by 1e6 lr (or
    by 0, once v = inf). Below C nothing changes.
    """
    return math.sqrt(torch.finfo(dtype).max) / 2


def adam(stack: Stack) -> None:
    """Adam direction; state keys ``exp_avg`` and ``exp_avg_sq``. Group keys ``betas``, ``eps``."""
    beta1, beta2 = stack.group["betas"]
    # Gated: on a skipped step g is zero and the coefficients are (1, 0), so m and v keep their values.
    m = stack.buffer("exp_avg", gated=True)
    v = stack.buffer("exp_avg_sq", gated=True)
    C = saturation(m.dtype)
    g = stack.update.clamp(-C, C)
    m.lerp_(g, stack.take(1 - beta1, m))
    v.mul_(stack.keep(beta2, v)).addcmul_(g, g, value=1 - beta2)
    t = stack.per_item(stack.step)
    bias1 = 1 - torch.pow(beta1, t)
    bias2 = 1 - torch.pow(beta2, t)
    # One temporary instead of four: denom <- sqrt(v) / sqrt(bias2) + eps, then m / denom in place.
    denom = v.sqrt().div_(bias2.sqrt()).add_(stack.group["eps"])
    stack.update = torch.div(m, denom, out=denom)
    stack.step_size = stack.step_size / bias1


def fused_applies(params: list[Tensor]) -> bool:
    """Whether :func:`adamw_inplace` can run these parameters (a host-side check of static facts).

    The fused kernel keeps its state in the parameter dtype, so only fp32 parameters (and fp64 on
    CPUs, whose kernel reads fp64 step counters) qualify; bf16 / fp16 parameters keep fp32 state
    through :func:`adam`. Gradients must have the parameter's dtype; parameters must be contiguous
    (the kernel pairs parameter, gradient and state entries by memory order).
    """
    p0 = params[0]
    if p0.device.type not in ("cpu", "cuda") or not hasattr(torch, "_fused_adamw_"):
        return False
    allowed = (torch.float32, torch.float64) if p0.device.type == "cpu" else (torch.float32,)
    return (
        p0.dtype in allowed
        and all(p.is_contiguous() for p in params)
        and all(p.grad is None or p.grad.dtype == p.dtype for p in params)
    )


def _saturate(grads: list[Tensor], C: float) -> list[Tensor]:
    """``clamp(g, -C, C)`` for every gradient, into new tensors (``p.grad`` is never written)."""
    out = list(grads)
    large = [i for i, g in enumerate(grads) if g.numel() >= _LARGE]
    small = [i for i, g in enumerate(grads) if g.numel() < _LARGE]
    for i in large:  # one read, one write
        out[i] = torch.clamp(grads[i], -C, C)
    if small:  # many small tensors: two C++ loops instead of one Python call each
        clamped = torch._foreach_clamp_min([grads[i] for i in small], -C)
        torch._foreach_clamp_max_(clamped, C)
        for i, g in zip(small, clamped):
            out[i] = g
    return out


def adamw_inplace(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    *,
    lr: float | Tensor,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    gate: Tensor | None = None,
) -> None:
    """One AdamW step in place over same-dtype, same-device parameters, with no stacking.

    Algorithm (per element; Loshchilov & Hutter, arXiv 1711.05101, torch.optim.AdamW)::

        g <- clamp(g, -C, C)                      # C = sqrt(finfo.max) / 2, see saturation()
        t <- t + 1                                # t + gate: unchanged on a skipped step
        W <- W (1 - lr wd)
        m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
        W <- W - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    The last three lines are ``torch._fused_adamw_`` (the kernel behind
    ``torch.optim.AdamW(fused=True)``). ``gate`` (0-D bool, False = skip the step) becomes the
    kernel's ``found_inf``: on a skipped step the kernel returns before writing, so parameters,
    moments and step counters stay bitwise unchanged, decided on the device with no host sync.

    Args:
        params, grads, exp_avgs, exp_avg_sqs, steps: per-parameter tensors (``steps`` 0-D,
            updated in place like the rest).
        lr, betas, eps, weight_decay: the group's hyperparameters.
        gate: None (always step) or the step's on-device finite flag.
    """
    beta1, beta2 = betas
    g = _saturate(grads, saturation(params[0].dtype))
    # The fused kernel walks parameter and gradient memory in the same order: a gradient laid out
    # differently (a transposed or permuted autograd result) would be read against the wrong
    # entries -- torch.optim.AdamW(fused=True) itself returns wrong values then (torch 2.13, CPU).
    g = [x if x.is_contiguous() else x.contiguous() for x in g]
    found_inf = None
    if gate is None:
        torch._foreach_add_(steps, 1.0)
    else:
        # A list of the 0-D flag, not the flag itself: _foreach_add_(tensors, <0-D tensor>) reads it into a
        # host scalar (.item()) on CPU, which on a device would be a sync; the list form adds it on the device.
        torch._foreach_add_(steps, [gate.to(steps[0].dtype)] * len(steps))
        found_inf = (~gate).to(torch.float32)  # the kernel reads a float flag: 1.0 = skip
    torch._fused_adamw_(
        params, g, exp_avgs, exp_avg_sqs, [], steps,
        lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay, eps=eps,
        amsgrad=False, maximize=False, grad_scale=None, found_inf=found_inf,
    )
