"""Pion's spectrum-preserving update: rotate W by orthogonal factors on the left and the right.

Instead of adding a step to ``W``, Pion moves it along its orbit under orthogonal equivalence,
``W <- Q_out W Q_in`` with ``Q`` (nearly) orthogonal, so the singular values of ``W`` are kept.
The generators live in the Lie algebra of skew-symmetric matrices. With ``g = dL/dW``, the
derivative of ``L(W exp(A))`` at ``A = 0`` is ``W^T g`` and that of ``L(exp(A) W)`` is ``g W^T``;
their skew parts are the Riemannian gradients on each side:

    G_in  = W^T g - g^T W      (n x n)          G_out = g W^T - W g^T      (m x m)

Adam moments are kept on the generators (elementwise; ``m`` stays skew and ``v`` symmetric, so
``A = -m / (sqrt(v) + eps)`` is skew again), the step is RMS-normalised so that the first-order move
``eta alpha (A_out W + W A_in)`` has RMS ``eta c``, and the exponential is truncated at second order:

    E2(hA) = I + hA + (hA)^2 / 2,      E2^T E2 = I + h^4 A^4 / 4   (A skew)

so each step changes the singular values only at fourth order in the step, ``O((eta alpha ||A||)^4)``.
In the alternating mode (the default) step ``t`` rotates one side only, the left (out) side on odd
``t`` and the right (in) side on even ``t``; both sides' moments are updated at every step.

References:
    Shi, Li, Qiu, Wen, Buchholz, Liu, "Pion: A Spectrum-Preserving Optimizer via Orthogonal
    Equivalence Transformation", arXiv 2605.12492 (project page spherelab.ai/pion). No official
    code was found; the exact moment, normalisation and alternation details follow the third-party
    JAX implementation RhizomeResearch/rollfast (``src/rollfast/optim/pion.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Stack


def saturate(X: Tensor) -> Tensor:
    """``clamp(X, -C, C)`` with ``C = sqrt(finfo.max) / 2``: squares (second moments) never overflow."""
    C = math.sqrt(torch.finfo(X.dtype).max) / 2
    return X.clamp(-C, C)


def skew_generators(W: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    """``(G_in, G_out)`` = ``(W^T g - g^T W, g W^T - W g^T)`` for stacks ``(k, m, n)``."""
    P = torch.bmm(W.mT, g)  # (k, n, n)
    Q = torch.bmm(g, W.mT)  # (k, m, m)
    return saturate(P - P.mT), saturate(Q - Q.mT)


def exp2(A: Tensor, h: Tensor) -> Tensor:
    """Second-order truncated exponential ``I + hA + (hA)^2 / 2`` of a stack ``(k, d, d)``, ``h`` ``(k, 1, 1)``."""
    hA = h * A
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    return torch.baddbmm(eye + hA, hA, hA, beta=1.0, alpha=0.5)


def adam_generator(stack: Stack, side: str, G: Tensor) -> Tensor:
    """Update the moments ``pion.m_<side>``, ``pion.v_<side>`` with ``G`` and return ``A = -m / (sqrt(v) + eps)``."""
    b1, b2 = stack.group["betas"]
    axes = "nn" if side == "in" else "mm"
    m = stack.buffer(f"pion.m_{side}", axes)
    v = stack.buffer(f"pion.v_{side}", axes)
    m.lerp_(G, 1 - b1)
    v.mul_(b2).addcmul_(G, G, value=1 - b2)
    return -m / (v.sqrt() + stack.group["eps"])  # no bias correction (rollfast); alpha rescales anyway


def rotate(stack: Stack) -> None:
    """Pion's update of every matrix of the stack; reads ``stack.weights``, sets ``update = W - W_new``.

    Group keys: ``betas`` (b1, b2), ``eps``, ``rms_scale`` (c), ``alternating``, ``lr``.
    State (per matrix): ``pion.m_in``, ``pion.v_in`` ``(n, n)`` and ``pion.m_out``, ``pion.v_out``
    ``(m, m)``: ``2 (m^2 + n^2)`` words.

    .. code-block:: text

        G_in = W^T g - g^T W ;  G_out = g W^T - W g^T
        m_s <- b1 m_s + (1 - b1) G_s ;  v_s <- b2 v_s + (1 - b2) G_s^2 ;  A_s = -m_s / (sqrt(v_s) + eps)
        alternating: A_in <- 0 on odd t, A_out <- 0 on even t      (per matrix, on the device)
        alpha = c sqrt(mn) / (||A_out W + W A_in||_F + eps) ;  h = lr alpha
        W_new = E2(h A_out) W E2(h A_in)

    The alternating mode is the bilateral formula with the idle side's generator zeroed
    (``E2(0) = I`` exactly), so a stack whose matrices sit at different step counts needs no host
    branch; it therefore costs the same FLOPs as the bilateral mode here.
    """
    if stack.ctx.sharded_dim is not None:
        raise NotImplementedError(
            "Pion needs whole matrices (W^T g, E2(A) W): FSDP2-sharded parameters are not supported; use DDP "
            "(replicated) or local parameters"
        )
    group = stack.group
    W = stack.weights  # (k, m, n), compute dtype
    g = saturate(stack.update)
    m, n = stack.shape[-2:]
    G_in, G_out = skew_generators(W, g)
    A_in = adam_generator(stack, "in", G_in)  # (k, n, n)
    A_out = adam_generator(stack, "out", G_out)  # (k, m, m)
    if group["alternating"]:
        odd = stack.per_item(torch.remainder(stack.step, 2) == 1)  # (k, 1, 1): the out side on t = 1, 3, ...
        A_out = torch.where(odd, A_out, 0.0)
        A_in = torch.where(odd, 0.0, A_in)
    D = torch.bmm(A_out, W) + torch.bmm(W, A_in)  # (k, m, n): first-order move per unit step
    (norm,) = stack.norms((D, (-2, -1)))
    # A zero gradient history gives D = 0 and a huge but finite h times A = 0: E2 = I exactly.
    h = stack.hp("lr") * group["rms_scale"] * math.sqrt(m * n) / (stack.per_item(norm) + group["eps"])
    W_new = torch.bmm(torch.bmm(exp2(A_out, h), W), exp2(A_in, h))
    stack.update = W - W_new
    stack.step_size = 1.0
