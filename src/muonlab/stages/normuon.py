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

from .base import Stack
from .scale import MATCHED_ADAMW_RMS

#: values of the group key ``variant``
VARIANTS = ("official", "paper")


def frobenius(U: Tensor) -> Tensor:
    """Per-matrix Frobenius norm of a stack, shape ``(k, 1, 1)``."""
    return torch.linalg.matrix_norm(U, ord="fro", keepdim=True)


def divide_rows(stack: Stack, key: str, beta2: float, eps: float, shape: tuple[int, ...]) -> Tensor:
    """Update the row second moment ``key`` from ``stack.update`` and return ``O / (sqrt(v) + eps)``.

    Shared by NorMuon and TrasMuon (same maths, different state keys and eps). ``shape`` is the
    per-matrix item shape of the state: ``(m, 1)`` for NorMuon (as in its official code) and
    ``(m,)`` for TrasMuon (as in the authors' code).
    """
    O = stack.update  # (k, m, n)
    m = O.shape[-2]
    v = stack.buffer(key, shape)
    row_ms = O.square().mean(dim=-1, keepdim=True)  # (k, m, 1): mean square of each output row
    v.view(-1, m, 1).mul_(beta2).add_(row_ms, alpha=1 - beta2)
    # eps OUTSIDE the square root (both official codes); a zero row stays zero.
    return O / (v.view(-1, m, 1).sqrt() + eps)


def normalize_rows(stack: Stack) -> None:
    """NorMuon's neuron-wise normalisation; state ``normuon.v`` of shape ``(m, 1)`` per matrix.

    Group keys: ``beta2``, ``eps``, ``variant``.

    .. code-block:: text

        v  <- beta2 v + (1 - beta2) mean_cols(O * O)          # (m, 1)
        O^ <- O / (sqrt(v) + eps)
        official: O^ <- O^ * ||O||_F / (||O^||_F + eps)       # keep the norm of the NS output
        paper:    O^ <- O^ * 0.2 sqrt(mn) / (||O^||_F + eps)   # RMS 0.2, AdamW-scale lr
    """
    group = stack.group
    O = stack.update
    m, n = O.shape[-2:]
    eps = group["eps"]
    U = divide_rows(stack, "normuon.v", group["beta2"], eps, (m, 1))
    if group["variant"] == "official":
        target = frobenius(O)  # (k, 1, 1)
    else:
        target = MATCHED_ADAMW_RMS * math.sqrt(m * n)
    stack.update = U * (target / (frobenius(U) + eps))
