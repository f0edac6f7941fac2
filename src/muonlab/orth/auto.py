"""``"auto"``: per shape, the cheapest orthogonalizer that keeps Muon's accuracy.

The bound: relative Frobenius distance to the exact polar factor, ``||Y - UV^T||_F / ||UV^T||_F``,
no worse than that of five Jordan steps (``torch.optim.Muon``'s default) on the same input. Measured
candidates (``python -m muonlab.orth.auto_table``; the table is in docs/orthogonalizers.md), FLOPs for one
``k x K`` matrix (``k = min(m, n)``, ``alpha = K / k``) and five steps:

=====================================  =====================  ===========================
candidate                              FLOPs / k^3            meets the bound?
=====================================  =====================  ===========================
NS, Jordan x5 (the bound itself)       ``20 alpha + 10``      --
NS, You x5                             ``20 alpha + 10``      yes, on every input family
Gram-NS, You x5, restart at step 2     ``8 alpha + 28``       yes (fp64/fp32/bf16)
AOL (Turbo-Muon) x4                    ``16 alpha + 8``       no: ill-conditioned spectra
NS, You x4                             ``16 alpha + 8``       no: ill-conditioned spectra
=====================================  =====================  ===========================

So the choice is You's schedule, iterated on the Gram matrix where that saves FLOPs
(``alpha >= GRAM_MIN_ASPECT``) and as plain Newton–Schulz otherwise. Both compute the same
polynomial of ``X X^T``; only the order of the products differs. Half precision (fp16) keeps plain
NS: the Gram iteration's round-off there is not validated here.

References:
    Keller Jordan, Muon (2024), https://github.com/KellerJordan/Muon (the Jordan quintic).
    Jiacheng You's 5-step schedule, as shipped by microsoft/dion and Dao-AILab/gram-newton-schulz.
    Zhang, Amsel, Chen, Dao, "Gram Newton-Schulz" (2026), https://github.com/Dao-AILab/gram-newton-schulz.
    Boissin et al., "Turbo-Muon", arXiv 2512.04632 (the AOL candidate).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from muonlab.orth.gram import default_restarts, gram_newton_schulz
from muonlab.orth.polynomial import check_matrix, newton_schulz

#: aspect ratio K / k from which the Gram iteration runs (FLOPs (8a+28) vs (20a+10): 12% fewer at 2)
GRAM_MIN_ASPECT = 2.0
#: the schedule both candidates iterate
SCHEDULE = "you"


@dataclass(frozen=True)
class Choice:
    """What ``"auto"`` runs for one matrix shape."""

    method: str  # "newton_schulz" or "gram_newton_schulz"
    schedule: str
    steps: int
    flops: float  # per matrix
    baseline_flops: float  # plain NS with the same number of steps

    def label(self) -> str:
        """Short text for tables: ``"gram you x5"`` / ``"ns you x5"``."""
        return f"{'gram' if self.method == 'gram_newton_schulz' else 'ns'} {self.schedule} x{self.steps}"


def ns_flops(m: int, n: int, steps: int) -> float:
    """FLOPs of ``steps`` quintic NS steps on one ``m x n`` matrix: ``steps (4 k^2 K + 2 k^3)``."""
    k, K = min(m, n), max(m, n)
    return float(steps * (4 * k * k * K + 2 * k**3))


def gram_flops(m: int, n: int, steps: int) -> float:
    """FLOPs of Gram-NS with ``default_restarts(steps)`` (counted product by product, as gram.py runs)."""
    k, K = min(m, n), max(m, n)
    if k == K or steps == 0:
        return ns_flops(m, n, steps)
    restarts = set(default_restarts(steps))
    big, small = 2 * k * k * K, 2 * k**3  # one k x K product / one k x k product
    total, fresh = big, True  # R = X X^T
    for t in range(steps):
        if t > 0 and t in restarts:
            total += 2 * big  # X <- Q X, R <- X X^T
            fresh = True
        total += small  # Z = bR + cR^2
        total += 0 if fresh else small  # Q <- Z Q + a Q
        fresh = False
        if t < steps - 1 and (t + 1) not in restarts:
            total += 2 * small  # R <- (Z + aI) R (Z + aI)
    return float(total + big)  # X <- Q X


def choose(m: int, n: int, steps: int = 5, dtype: torch.dtype | None = None) -> Choice:
    """The orthogonalizer ``"auto"`` runs for an ``m x n`` matrix (host-side, from the shape alone)."""
    k, K = min(m, n), max(m, n)
    base = ns_flops(m, n, steps)
    gram_ok = dtype != torch.float16 and k > 0 and K / k >= GRAM_MIN_ASPECT
    if gram_ok and gram_flops(m, n, steps) < base:
        return Choice("gram_newton_schulz", SCHEDULE, steps, gram_flops(m, n, steps), base)
    return Choice("newton_schulz", SCHEDULE, steps, base, base)


def auto_orthogonalize(X: Tensor, steps: int = 5, dtype: torch.dtype | None = None) -> Tensor:
    """Registry entry ``"auto"``: ``f(X, steps, dtype)`` with the method :func:`choose` picks for X's shape.

    Args:
        X: tensor of shape (..., m, n); every matrix of the batch has the same shape, hence the same choice.
        steps: iterations of You's schedule (5 is the accuracy-checked setting).
        dtype: compute dtype of the iteration (None: ``X.dtype``).
    """
    check_matrix(X)
    c = choose(X.shape[-2], X.shape[-1], steps, dtype)
    if c.method == "gram_newton_schulz":
        return gram_newton_schulz(X, c.schedule, steps, restarts=default_restarts(steps), dtype=dtype)
    return newton_schulz(X, c.schedule, steps, dtype=dtype)
