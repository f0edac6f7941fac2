"""Shape-dependent step-size factors for orthogonalized updates.

An exactly orthogonal ``m x n`` matrix has RMS ``1/sqrt(max(m, n))``. The two conventions in use:

* ``"spectral"``: ``sqrt(max(1, m/n))`` (Keller Jordan's Muon; torch.optim.Muon "original"). The
  update then has RMS ``1/sqrt(n)`` = ``1/sqrt(fan_in)``; lr is in spectral-norm units (~0.02).
* ``"rms"``: ``0.2 * sqrt(max(m, n))`` (Moonlight; torch "match_rms_adamw"). The update has RMS
  0.2, inside AdamW's typical range, so AdamW's lr (~1e-3) and weight decay carry over.
* ``"none"``: factor 1.

``m, n`` are taken from the 2-D view ``(out, rest)`` of the parameter (conv weights included),
not from the raw 4-D shape as the reference implementations do.
"""

from __future__ import annotations

import math

from torch.fx.experimental.symbolic_shapes import guard_int

from .base import Stack

#: RMS that the "rms" convention gives an orthogonal update (Moonlight, arXiv 2502.16982 §2.2).
MATCHED_ADAMW_RMS = 0.2
ADJUST_LR = ("spectral", "rms", "none")


def shape_factor(m: int, n: int, adjust_lr: str) -> float:
    """The factor multiplying lr for an ``m x n`` matrix under convention ``adjust_lr``."""
    # Plain ints (guard_int specializes; int() does not): under a whole-step torch.compile(opt.step),
    # recompiled for a second bucket, m and n arrive as SymInts, and sqrt(max(1.0, m / n)) as a
    # symbolic float crashes inductor's scalar tensorify pass (KeyError 's2', torch 2.13;
    # pytorch/pytorch#151470 family). A bucket's shape is fixed, so nothing is lost.
    m, n = guard_int(m), guard_int(n)
    if adjust_lr == "spectral":
        return math.sqrt(max(1.0, m / n))
    if adjust_lr == "rms":
        return MATCHED_ADAMW_RMS * math.sqrt(max(m, n))
    if adjust_lr == "none":
        return 1.0
    raise ValueError(f"adjust_lr={adjust_lr!r}: expected one of {ADJUST_LR}")


def scale_by_shape(stack: Stack) -> None:
    """``step_size <- step_size * shape_factor(m, n, group["adjust_lr"])``."""
    m, n = stack.shape[-2:]
    stack.step_size = stack.step_size * shape_factor(m, n, stack.group["adjust_lr"])
