"""AdaGO: an AdaGrad-norm stepsize for orthogonalized momentum.

Per matrix, with ``G`` the raw gradient and one accumulated scalar ``s = v^2`` (starting at
``v0^2``):

    s     <- s + min(||G||_F, gamma)^2
    alpha <- max(eps, lr * min(||G||_F, gamma) / sqrt(s))

The direction is ``Orth(M)`` of the EMA momentum; the stage only sets ``stack.step_size``, so it runs
after the momentum stage and before (or after) ``orthogonalize``. ``eps`` is a *floor on the
stepsize*, not a denominator epsilon; ``gamma`` clips the gradient norm both in the numerator and
in the accumulator.

References:
    Minxin Zhang, Yuxuan Liu, Hayden Schaeffer, "AdaGrad Meets Muon: Adaptive Stepsizes for
    Orthogonal Updates", arXiv 2509.02981, §4.2 (Algorithm AdaGO). No official code is public.
"""

from __future__ import annotations

import torch

from .base import Stack
from .namo import ratio, saturate


def scale_by_adago(stack: Stack) -> None:
    """AdaGO's stepsize; state ``adago.s`` (one scalar per matrix, initialised to ``v0**2``).

    Group keys: ``lr`` (eta), ``gamma`` (norm clip), ``eps`` (stepsize floor), ``v0``.
    """
    group = stack.group
    (g,) = stack.norms((stack.grad, (-2, -1)))
    g = torch.clamp(saturate(g), max=group["gamma"])  # (k,) clipped ||G||_F
    s = stack.buffer("adago.s", "", fill=float(group["v0"]) ** 2, gated=True)  # (k,); g = 0 on a skipped step
    s.addcmul_(g, g)
    # ratio() returns 0 for s = 0 (v0 = 0 and a zero first gradient), so the floor takes over.
    alpha = torch.clamp(ratio(stack.hp("lr") * g, s.sqrt(), 0.0), min=group["eps"])  # (k,)
    stack.step_size = stack.per_item(alpha)
