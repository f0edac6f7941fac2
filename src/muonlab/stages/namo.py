"""NAMO and NAMO-D: Adam-style norm-ratio stepsizes for orthogonalized momentum.

NAMO scales the orthogonalized momentum ``O = Orth(M~)`` of each matrix by one adaptive scalar

    alpha = lr * sqrt(1 - mu2^t) / (1 - mu1^t) * ||M~||_F / (sqrt(v) + eps),   v = EMA_mu2(||G||_F^2)

and NAMO-D by one per column (per input feature of a PyTorch ``(out, in)`` weight),

    r_j = ||M~[:, j]|| / (sqrt(V_j) + eps),   V_j = EMA_mu2(||G[:, j]||^2),

clamped into ``[c * mean(r), mean(r) / c]`` (NaN-aware mean). ``M~`` is the momentum that is
orthogonalized (Nesterov-mixed by default) and ``G`` the raw gradient. Both stages run *after* the
momentum stage and *before* ``orthogonalize``: they read the norms of ``stack.update`` and set
``stack.step_size`` and ``stack.decay``; the direction is left to the orthogonalizer.

``group["variant"]`` picks the form:

* ``"official"`` (minxin-zhg/namo ``src/namo.py``): shape factor ``kappa * sqrt(max(A, B))``,
  ``min(., 1)`` caps on the update and the decay rates, decay ``1 - wd * min(alpha, 1)``
  (NAMO-D: per column, floored at 0), ``1e-12`` in the bias-correction denominator;
* ``"paper"`` (arXiv 2602.17080 §2.3 / §3.3): no shape factor, no caps, decay folded in as
  ``W <- W - alpha (O + wd W)`` (NAMO-D: per column, ``W <- W - (O + wd W) D``).

``group["decay"]`` picks the weight decay: ``"adaptive"`` (the variant's form above, with the adaptive
rate) or ``"adamw"`` (``W <- W (1 - lr wd)``, as AdamW and Muon; an independent reproduction,
minxin-zhg/namo issues #1 and #3, reports that this form changes GPT-2 small's loss).

References:
    Minxin Zhang et al., "Adam Improves Muon: Adaptive Moment Estimation with Orthogonalized
    Momentum", arXiv 2602.17080. Official code https://github.com/minxin-zhg/namo (``src/namo.py``,
    HEAD a3f37b0; eps outside the sqrt since commit 5f8805a).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Scalar, Stack, stat_dtype

VARIANTS = ("official", "paper")
#: "adaptive": the variant's own decay, with the adaptive rate (official: 1 - wd min(alpha, 1); paper:
#: folded in as alpha wd W); "adamw": 1 - lr wd, decoupled from the adaptive rate (AdamW, Muon).
DECAYS = ("adaptive", "adamw")
#: "leading": A, B = W.shape[:2] as in the official code (conv: out, in_channels);
#: "flattened": A, B = the (out, rest) matrix view the orthogonalizer sees.
CONV_SHAPES = ("leading", "flattened")
#: Added to 1 - mu1^t in the official code (namo.py); kept in the "official" variant only.
BIAS_EPS = 1e-12


def saturate(norm: Tensor) -> Tensor:
    """A norm saturated at ``C = sqrt(finfo.max) / 2``: its square (and any sum of a few) stays finite."""
    return norm.clamp(max=math.sqrt(torch.finfo(norm.dtype).max) / 2)


def ratio(num: Tensor, den: Tensor, eps: float) -> Tensor:
    """``num / (den + eps)`` for ``den >= 0``, and 0 where the denominator is 0 (eps = 0 with a zero history)."""
    if eps > 0:  # den + eps > 0 everywhere: the guard would pick num / den anyway (and costs 3 dispatches)
        return num / (den + eps)
    den = den + eps
    return torch.where(den > 0, num / den, 0.0)  # the 0/0 = NaN of the other branch is discarded


def bias_corrected_lr(stack: Stack) -> Tensor:
    """``lr * sqrt(1 - mu2^t) / (1 - mu1^t)``, shape ``(k,)``, on the device (no host sync)."""
    official = stack.group["variant"] == "official"
    t = stack.step  # (k,)
    b1 = 1 - torch.pow(stack.group["momentum"], t)
    b2 = 1 - torch.pow(stack.group["mu2"], t)
    return stack.hp("lr") * b2.sqrt() / (b1 + BIAS_EPS if official else b1)


def namo_shape_factor(stack: Stack) -> Scalar:
    """``kappa * sqrt(max(A, B))`` per matrix: a float, or a ``(k,)`` tensor if they differ.

    With ``conv_shape="leading"`` an N-D (N > 2) parameter uses ``A, B = W.shape[:2]`` as the
    official code does; 2-D weights and the matrices of a ``batch_3d`` parameter use their view.
    """
    kappa, rule = stack.group["scale_coeff"], stack.group["conv_shape"]
    m, n = stack.shape[-2:]
    shapes = stack.param_shapes or [(m, n)] * len(stack.counts)
    factors = []
    for shape, count, squeeze in zip(shapes, stack.counts, stack.squeeze):
        a, b = (shape[0], shape[1]) if rule == "leading" and squeeze and len(shape) > 2 else (m, n)
        factors += [kappa * math.sqrt(max(a, b))] * count
    if len(set(factors)) <= 1:  # none: an empty stack (a rank holding no expert of a sharded batch)
        return factors[0] if factors else kappa * math.sqrt(max(m, n))
    # Mixed conv / linear bucket: built with device fills (no host-to-device copy, no sync).
    opts = dict(dtype=stack.grad.dtype, device=stack.grad.device)
    return torch.cat([torch.full((1,), f, **opts) for f in factors])


def clamp_to_mean(r: Tensor, c: float, mean: Tensor | None = None) -> Tensor:
    """Clip each row of ``r`` (shape ``(..., n)``) into ``[c * mean, mean / c]``.

    The mean is NaN-aware (``torch.nanmean``) and taken over the pre-clamp values. If it is not
    finite and positive (all NaN, or all zero) the bounds fall back to ``[0, inf)``. ``c`` outside
    ``(0, 1]`` disables the clamp, as in the official code. NaN entries stay NaN. ``mean`` may be
    given (shape ``(..., 1)``) when ``r`` holds only some of the columns (a column-sharded stack).
    """
    if not 0 < c <= 1:
        return r
    if mean is None:
        mean = torch.nanmean(r, dim=-1, keepdim=True)  # (..., 1)
    # The same bounds as where(isfinite(mean) & (mean > 0), (c mean, mean / c), (0, inf)) in 8 small ops
    # rather than 13 (isfinite alone is four on CPU): c * mean of a negative, NaN or inf mean maps to 0,
    # and mean > 0 fails for NaN; a positive finite mean may give mean / c = inf, as before.
    lo = (mean * c).clamp_(min=0.0).nan_to_num_(nan=0.0, posinf=0.0)
    hi = torch.where(mean > 0, mean / c, math.inf)
    return torch.clamp(r, lo, hi)


def scale_by_namo(stack: Stack) -> None:
    """NAMO's adaptive stepsize; state ``namo.v`` (one scalar per matrix).

    Group keys: ``lr``, ``momentum`` (mu1), ``mu2``, ``eps``, ``weight_decay``, ``variant``,
    ``scale_coeff`` (kappa) and ``conv_shape`` (official variant only).
    """
    group = stack.group
    mu2, wd = group["mu2"], group["weight_decay"]
    # (k,) raw gradient norm and norm of the momentum that gets orthogonalized (one reduction).
    # Overflow-safe norms and fp64 statistics: ||G||^2 of a 1e30-entry gradient is ~1e64, beyond
    # fp32, and the ratio must still be the formula's (tests compare with fp64 at +-1e30).
    sd = stat_dtype(stack.grad.device)
    g, m = stack.norms((stack.grad, (-2, -1)), (stack.update, (-2, -1)), dtype=sd)
    stack.remember_norm(m)  # the orthogonalizer normalizes this update by the same norm
    v = stack.buffer("namo.v", "", dtype=sd, gated=True)  # (k,); g = 0 on a skipped step
    v.mul_(stack.keep(mu2, v)).addcmul_(g, g, value=1 - mu2)
    alpha = (bias_corrected_lr(stack).to(sd) * ratio(m, v.sqrt(), group["eps"])).to(stack.grad.dtype)  # (k,)
    if group["variant"] == "official":
        step = torch.clamp(alpha * namo_shape_factor(stack), max=1.0)
        rate = torch.clamp(alpha, max=1.0)
    else:
        step, rate = alpha, alpha
    stack.step_size = stack.per_item(step)
    if wd != 0:
        stack.decay = 1 - stack.hp("lr") * wd if group["decay"] == "adamw" else stack.per_item(1 - wd * rate)


def scale_by_namo_d(stack: Stack) -> None:
    """NAMO-D's per-column stepsizes; state ``namo_d.v`` (a vector of length n per matrix).

    Group keys: those of :func:`scale_by_namo`, plus ``c`` (clamp; outside ``(0, 1]``: none).
    """
    group = stack.group
    mu2, wd = group["mu2"], group["weight_decay"]
    # (k, n) column norms of the raw gradient and of the momentum that gets orthogonalized;
    # overflow-safe, with fp64 statistics as in scale_by_namo.
    sd = stat_dtype(stack.grad.device)
    cg, cm = stack.norms((stack.grad, -2), (stack.update, -2), dtype=sd)
    if sd == torch.float64 and stack.ctx.sharded_dim != -1:
        # ||M~||_F from the column norms, for the orthogonalizer's normalization: exact in fp64 (the
        # squares of fp32 norms cannot overflow there); with sharded columns the sum would be partial.
        stack.remember_norm(cm.square().sum(-1).sqrt())
    V = stack.buffer("namo_d.v", "n", dtype=sd, gated=True)  # (k, n); cg = 0 on a skipped step
    V.mul_(stack.keep(mu2, V)).addcmul_(cg, cg, value=1 - mu2)
    r = ratio(cm, V.sqrt(), group["eps"]).to(stack.grad.dtype)  # (k, n)
    c = group["c"]
    r = clamp_to_mean(r, c, stack.nanmean_cols(r) if 0 < c <= 1 else None)  # (k, n)
    # The clamp is positively homogeneous, so scaling by the bias-corrected lr after it is the
    # same as clamping the bias-corrected ratios (the paper's statement).
    d = bias_corrected_lr(stack).unsqueeze(-1) * r  # (k, n)
    if group["variant"] == "official":
        factor = namo_shape_factor(stack)
        factor = factor.unsqueeze(-1) if isinstance(factor, Tensor) else factor
        step = torch.clamp(d * factor, max=1.0)
        decay = torch.clamp(1 - wd * torch.clamp(d, max=1.0), min=0.0)
    else:
        step, decay = d, 1 - wd * d
    stack.step_size = step.unsqueeze(-2)  # (k, 1, n): scales column j of O
    if wd != 0:
        stack.decay = 1 - stack.hp("lr") * wd if group["decay"] == "adamw" else decay.unsqueeze(-2)
