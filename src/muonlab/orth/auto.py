"""``"auto"`` / ``"auto_you"``: per shape, the cheapest form of a 5-step schedule at equal accuracy.

Newton–Schulz and Gram–Newton–Schulz compute the same odd polynomial of ``X X^T`` in a different order
of products; which is cheaper depends on the shape alone. ``choose`` picks, host-side and per stack:

* ``"auto"`` (**the default of every Jordan-based preset**): Jordan's quintic, exactly the polynomial of
  ``torch.optim.Muon`` and of the authors' code, as Gram-NS where that saves FLOPs *and* its round-off
  is validated for the iteration dtype (fp32, fp64: relative Frobenius error within 1.1e-6 of plain NS
  on every input family; bf16: 1-4% above, so bf16 keeps plain NS), as plain NS otherwise. The
  update's scale and every tuned learning rate are unchanged.
* ``"auto_you"``: You's schedule, which is closer to orthogonal than Jordan's on every input family
  (singular values in [0.978, 1.032] vs [0.68, 1.13]), as Gram-NS from the same aspect ratio in fp32,
  fp64 and bf16 (validated there), never in fp16.

Both never exceed the orthogonality error of five Jordan steps (relative Frobenius distance to the
exact polar factor; ``python -m muonlab.orth.auto_table``, docs/orthogonalizers.md). FLOPs for one
``k x K`` matrix (``k = min(m, n)``, ``alpha = K / k``), five steps:

=====================================  =====================
form                                   FLOPs / k^3
=====================================  =====================
NS x5                                  ``20 alpha + 10``
Gram-NS x5, restart at step 2          ``8 alpha + 28``
=====================================  =====================

Rejected candidates (they change the polynomial and fail the bound on ill-conditioned spectra):
AOL (Turbo-Muon) x4 and You x4, both ``16 alpha + 8``.

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

#: aspect ratio K / k from which the Gram form runs (FLOPs (8a+28) vs (20a+10): 12% fewer at 2)
GRAM_MIN_ASPECT = 2.0
#: iteration dtypes in which the Gram form's round-off was validated against plain NS, per schedule
#: (accuracy bound on every input family; Jordan's Gram form in bf16 is 1-4% above plain NS)
GRAM_DTYPES: dict[str, frozenset[torch.dtype]] = {
    "jordan": frozenset({torch.float32, torch.float64}),
    "you": frozenset({torch.float32, torch.float64, torch.bfloat16}),
}


@dataclass(frozen=True)
class Choice:
    """What ``"auto"`` / ``"auto_you"`` runs for one matrix shape."""

    method: str  # "newton_schulz" or "gram_newton_schulz"
    schedule: str
    steps: int
    flops: float  # per matrix
    baseline_flops: float  # plain NS with the same number of steps

    def label(self) -> str:
        """Short text for tables: ``"gram jordan x5"`` / ``"ns you x5"``."""
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


def choose(
    m: int, n: int, steps: int = 5, dtype: torch.dtype | None = None, schedule: str = "jordan",
) -> Choice:
    """The form ``"auto"`` (``schedule="jordan"``) or ``"auto_you"`` runs for an ``m x n`` matrix.

    Host-side, from the shape and the iteration dtype alone (``None``: fp32).
    """
    if schedule not in GRAM_DTYPES:
        raise ValueError(f"schedule must be one of {sorted(GRAM_DTYPES)}, got {schedule!r}")
    k, K = min(m, n), max(m, n)
    base = ns_flops(m, n, steps)
    gram_ok = (dtype or torch.float32) in GRAM_DTYPES[schedule] and k > 0 and K / k >= GRAM_MIN_ASPECT
    if gram_ok and gram_flops(m, n, steps) < base:
        return Choice("gram_newton_schulz", schedule, steps, gram_flops(m, n, steps), base)
    return Choice("newton_schulz", schedule, steps, base, base)


def auto_orthogonalize(
    X: Tensor, steps: int = 5, dtype: torch.dtype | None = None, eps: float = 1e-7, schedule: str = "jordan",
    *, norm: Tensor | None = None,
) -> Tensor:
    """Registry entries ``"auto"`` / ``"auto_you"``: ``f(X, steps, dtype)`` in the form :func:`choose` picks.

    Args:
        X: tensor of shape (..., m, n); every matrix of the batch has the same shape, hence the same choice.
        steps: iterations of the schedule (5 is the accuracy-checked setting).
        dtype: compute dtype of the iteration (None: ``X.dtype``).
        eps: added to the normalization's Frobenius norm (as in :func:`newton_schulz`).
        schedule: ``"jordan"`` (``"auto"``) or ``"you"`` (``"auto_you"``).
        norm: ``||X||_F`` per matrix when the caller knows it already (skips the normalization's passes).
    """
    check_matrix(X)
    c = choose(X.shape[-2], X.shape[-1], steps, dtype or X.dtype, schedule)
    if c.method == "gram_newton_schulz":
        return gram_newton_schulz(X, schedule, steps, restarts=default_restarts(steps), dtype=dtype, eps=eps, norm=norm)
    return newton_schulz(X, schedule, steps, dtype=dtype, eps=eps, norm=norm)
