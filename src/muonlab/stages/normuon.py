"""NorMuon's neuron-wise normalisation of an orthogonalized update.

After orthogonalization the rows of ``O`` (one per output neuron) still have very different norms.
NorMuon keeps an EMA of each row's mean square, ``v_i <- beta2 v_i + (1 - beta2) mean_j O_ij^2``,
and divides row ``i`` by ``sqrt(v_i) + eps``; the result is then rescaled per matrix, either back to
the Frobenius norm of ``O`` (official code) or to RMS 0.2 (paper). Statistics use the 2-D view
``(out, rest)`` of the parameter, so a conv weight is normalised per output channel.

References:
    Li, Liu, Liang, Chen, Zhao, "NorMuon: Making Muon more efficient and scalable",
    arXiv 2510.05491 (ICLR 2026); official code https://github.com/zichongli5/NorMuon (``normuon.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..orth import workspace
from .base import Stack
from .scale import MATCHED_ADAMW_RMS

#: values of the group key ``variant``
VARIANTS = ("official", "paper")


def frobenius(stack: Stack, *Us: Tensor) -> list[Tensor]:
    """Per-matrix Frobenius norms of same-stack tensors, each of shape ``(k, 1, 1)`` (one reduction).

    Plain norms: the inputs are orthogonalized updates and their row-normalized forms, entries of
    order 1 at any gradient scale, so the overflow-safe passes would buy nothing.
    """
    return [x.view(stack.k, 1, 1) for x in stack.norms(*((U, (-2, -1)) for U in Us), safe=False)]


def divide_rows(stack: Stack, key: str, beta2: float, eps: float, axes: str) -> Tensor:
    """Update the row second moment ``key`` from ``stack.update`` and return ``O / (sqrt(v) + eps)``.

    Shared by NorMuon and TrasMuon (same maths, different state keys and eps). ``shape`` is the
    ``axes`` names the per-matrix state dims: ``"m1"``, i.e. ``(m, 1)``, for NorMuon (as in its
    official code) and ``"m"`` for TrasMuon (as in the authors' code).
    """
    O = stack.update  # (k, m, n)
    m_local, n = O.shape[-2], stack.shape[-1]
    v = stack.buffer(key, axes, gated=True).view(stack.k, m_local, 1)
    # One full-size temporary for the squares and then the quotient (a fresh one costs page faults on
    # CPUs; contiguous, as a fresh result is: O may be a transposed view).
    buf = workspace.empty(O.shape, O.dtype, O.device)
    (row_ss,) = stack.sums((torch.mul(O, O, out=buf), -1))  # (k, m): sum of squares of each output row
    if stack.gate is not None:  # O is not zero on a skipped step (it comes from the momentum): gate the small term
        row_ss = row_ss * stack.gate
    v.mul_(stack.keep(beta2, v)).add_(row_ss.unsqueeze(-1), alpha=(1 - beta2) / n)  # mean over the n columns
    # eps OUTSIDE the square root (both official codes); a zero row stays zero, also with eps = 0
    # (v_i = 0 only if row i of O is zero: 0 / 1, not 0 / 0; the guard is on the small (k, m, 1) tensor).
    den = v.sqrt() + eps
    return torch.div(O, torch.where(den > 0, den, 1.0), out=buf)


def normalize_rows(stack: Stack) -> None:
    """NorMuon's neuron-wise normalisation; state ``normuon.v`` of shape ``(m, 1)`` per matrix.

    Group keys: ``beta2``, ``eps``, ``variant``.

    .. code-block:: text

        v  <- beta2 v + (1 - beta2) mean_cols(O * O)          # (m, 1)
        O^ <- O / (sqrt(v) + eps)
        official: O^ <- O^ * ||O||_F / (||O^||_F + eps)       # keep the norm of the NS output
        paper:    O^ <- O^ * 0.2 sqrt(mn) / ||O^||_F           # RMS 0.2, AdamW-scale lr (no eps)
    """
    group = stack.group
    O = stack.update
    m, n = stack.shape[-2:]
    eps = group["eps"]
    U = divide_rows(stack, "normuon.v", group["beta2"], eps, "m1")
    if group["variant"] == "official":
        target, norm = frobenius(stack, O, U)  # (k, 1, 1) each, one reduction
        norm = norm + eps  # the official code's eps; the paper's form has none
    else:
        target, (norm,) = MATCHED_ADAMW_RMS * math.sqrt(m * n), frobenius(stack, U)
    # The per-matrix rescale goes into the step size (every later stage and the write use
    # step_size * update): no pass over U for it. A zero matrix: 0.
    stack.update = U
    stack.step_size = stack.step_size * torch.where(norm > 0, target / norm, 0.0)
