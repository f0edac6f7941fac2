"""Turbo-Muon's AOL-preconditioned Newton-Schulz as a plain loop (one matrix, fp64).

Written from Boissin, Massena, Mamalet, Serrurier, "Turbo-Muon" (arXiv 2512.04632) and the AOL
bound of Prach & Lampert (arXiv 2208.03160): rescale row i of the wide matrix by
``(sum_j |(X X^T)_ij|)^(-1/2)``, then run the last ``steps`` triples of You's schedule. No Frobenius
normalisation (the library adds one; AOL is scale invariant, so the results agree).
"""

from __future__ import annotations

import torch

from tests.reference.orth_coefficients import SPEC_YOU


def aol_reference(G: torch.Tensor, steps: int = 4, eps: float = 1e-7) -> torch.Tensor:
    """Approximate polar factor of one 2-D matrix ``G`` (any float dtype; computed in fp64)."""
    X = G.to(torch.float64)
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    k = X.shape[0]
    A = X @ X.T
    s = torch.empty(k, dtype=torch.float64)
    for i in range(k):  # one AOL factor per row of the wide matrix
        row_sum = sum(abs(float(A[i, j])) for j in range(k))
        s[i] = 1.0 / max(row_sum, eps) ** 0.5
    X = torch.diag(s) @ X
    coeffs = SPEC_YOU[len(SPEC_YOU) - steps :] if steps <= len(SPEC_YOU) else SPEC_YOU + [SPEC_YOU[-1]] * (steps - 5)
    for a, b, c in coeffs:
        A = X @ X.T  # equals diag(s) A diag(s) at the first iteration
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X
