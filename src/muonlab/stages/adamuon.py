"""AdaMuon's element-wise second moment on the orthogonalized update.

AdaMuon orthogonalizes the *sign* of the momentum (v2/v3 of the paper and the official code), then
keeps an Adam-like EMA ``V`` of the squared orthogonalized update, element by element, with the
same beta as the momentum and no bias correction, divides by ``sqrt(V) + eps`` and rescales each
matrix to RMS 0.2 so that AdamW's learning rate and weight decay carry over.

References:
    Si, Zhang, Shen, "AdaMuon: Adaptive Muon Optimizer", arXiv 2507.11005 (v2/v3);
    official code https://github.com/Chongjie-Si/AdaMuon (``gpt2/models/optimizers/adamuon.py``).
"""

from __future__ import annotations

import math

import torch

from ..orth import workspace
from .base import Stack
from .normuon import frobenius
from .orthogonalize import sign
from .scale import MATCHED_ADAMW_RMS


def sign_before_orth(stack: Stack) -> None:
    """``U <- sign(U)`` when the group's ``sign_before_orth`` is on (AdaMuon v2/v3); else nothing (v1)."""
    if stack.group["sign_before_orth"]:
        sign(stack)


def normalize_elements(stack: Stack) -> None:
    """AdaMuon's element-wise normalisation; state ``adamuon.v`` of shape ``(m, n)`` per matrix.

    Group keys: ``momentum`` (the beta shared with the first moment), ``eps``.

    .. code-block:: text

        V  <- beta V + (1 - beta) O * O                      # no bias correction
        O^ <- O / (sqrt(V) + eps)
        O^ <- O^ * 0.2 sqrt(mn) / (||O^||_F + eps)           # RMS 0.2
    """
    beta = stack.group["momentum"]
    eps = stack.group["eps"]
    O = stack.update  # (k, m, n)
    m, n = stack.shape[-2:]
    # Gated: O is not zero on a skipped step (it comes from the momentum), so one factor of the new
    # term is gated instead: one multiply, where a snapshot and a restore cost a clone and a where().
    V = stack.buffer("adamuon.v", gated=True)
    # One full-size temporary for the whole stage (each fresh one costs page faults on CPUs): the
    # gated factor, then sqrt(V) + eps, then the quotient, in place.
    # (Contiguous, as V is: O may be a transposed view, and out= into a strided tensor breaks compiled graphs.)
    buf = workspace.empty(O.shape, O.dtype, O.device)
    if stack.gate is not None:
        torch.mul(O, stack.gate, out=buf)
    V.mul_(stack.keep(beta, V)).addcmul_(O if stack.gate is None else buf, O, value=1 - beta)
    # V_ij = 0 only where O_ij = 0: the clamp turns that 0 / 0 (eps = 0) into 0 / tiny = 0.
    U = torch.div(O, torch.sqrt(V, out=buf).add_(eps).clamp_min_(torch.finfo(V.dtype).tiny), out=buf)
    (norm,) = frobenius(stack, U)
    scale = MATCHED_ADAMW_RMS * math.sqrt(m * n) / (norm + eps)
    # The per-matrix rescale goes into the step size (every later stage and the write use step_size * update).
    stack.update = U
    stack.step_size = stack.step_size * torch.where(norm + eps > 0, scale, 0.0)
