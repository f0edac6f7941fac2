"""Turbo-Muon: Newton-Schulz preconditioned by AOL row scaling instead of Frobenius normalisation.

Plain Newton-Schulz starts from ``X / ||X||_F``: safe (``sigma_max <= 1``) but pessimistic, since
``||X||_F`` can exceed ``sigma_max`` by up to ``sqrt(rank)``, so the early iterations are spent
lifting small singular values. Turbo-Muon instead rescales the rows of the wide iterate with the
AOL ("almost-orthogonal layer") factors of Prach & Lampert,

    A = X X^T,   s_i = (sum_j |A_ij|)^(-1/2),   X <- diag(s) X,

which also guarantees ``||diag(s) X||_2 <= 1`` (``diag(s) A diag(s)`` has absolute row sums <= 1,
so its spectral radius is <= 1) and usually lands much closer to orthogonal. The Gram matrix of
the first iteration is then ``diag(s) A diag(s)``, reusing ``A``: the preconditioner costs one
``O(k^2)`` pass, and the authors drop one of You's five iterations (they run the *last four*).

AOL changes the target: ``msign(diag(s) X) != msign(X)`` in general (the row scaling is not a
polynomial in ``X X^T``), so Turbo-Muon approximates the polar factor of a row-rescaled matrix;
``tests/test_orth_aol.py`` measures how far that is from the exact polar factor.

References:
    Boissin, Massena, Mamalet, Serrurier, "Turbo-Muon: Accelerating Orthogonality-Based
        Optimization with Pre-Conditioning", arXiv 2512.04632; code
        https://github.com/thib-s/flash-newton-schulz (``NS_ours``: AOL + ``ns_consts[-iter:]``).
    Prach & Lampert, "Almost-Orthogonal Layers for Efficient General-Purpose Lipschitz Networks",
        ECCV 2022, arXiv 2208.03160 (the AOL bound).
    Jiacheng You's 5-step schedule (``muonlab.orth.YOU``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from muonlab.orth.polynomial import check_compute_dtype, check_matrix, normalize
from muonlab.orth.schedules import YOU, Triple

#: iterations of the authors' setting (``NS_ours(G, iter=4)``): one fewer than You's 5-step schedule
TURBO_STEPS = 4
#: floor of the AOL row sums before the inverse square root (the authors' ``epsilon``, 1e-7)
AOL_EPS = 1e-7


def turbo_coefficients(steps: int, schedule: Sequence[Triple] = YOU) -> tuple[Triple, ...]:
    """The triples Turbo-Muon runs for ``steps`` iterations: the *last* ``steps`` of ``schedule``.

    ``steps <= len(schedule)`` is the authors' ``ns_consts[-iter:]`` (4 -> You's entries 2-5); beyond
    the list the last entry is repeated (muonlab's convention for every schedule; the authors' code
    would silently run only ``len(schedule)`` iterations).
    """
    triples = tuple(schedule)
    if steps <= len(triples):
        return triples[len(triples) - steps :]
    return triples + (triples[-1],) * (steps - len(triples))


def aol_newton_schulz(
    X: Tensor,
    steps: int = TURBO_STEPS,
    *,
    schedule: Sequence[Triple] = YOU,
    dtype: torch.dtype | None = None,
    eps: float = AOL_EPS,
) -> Tensor:
    """Turbo-Muon's AOL-preconditioned Newton-Schulz (approximate polar factor of every matrix of ``X``).

    Algorithm (per matrix, wide ``k x K`` after an optional transpose)::

        X <- X / ||X||_F                        # fp32 (fp64 for fp64 input); exact no-op for AOL
        A <- X X^T
        s <- 1 / sqrt(max(rowsum |A|, eps))     # AOL: ||diag(s) X||_2 <= 1
        X <- diag(s) X;  A <- diag(s) A diag(s)
        for t, (a, b, c) in enumerate(last `steps` triples of the schedule):
            if t > 0: A <- X X^T
            X <- a X + (b A + c A^2) X
        undo the transpose

    The Frobenius pre-normalisation is not in the authors' code: AOL is invariant to a positive
    scale of ``X`` (``s`` scales by its inverse), so it changes nothing but rounding, and it keeps
    ``X X^T`` from overflowing for huge gradients (fp32 overflows past entries of ~1e19).

    Args:
        X: tensor of shape (..., m, n).
        steps: iterations (>= 0; the authors use 4).
        schedule: the coefficient list whose last ``steps`` entries are run (You's 5-step list).
        dtype: compute dtype (None: ``X.dtype``); the row sums and ``s`` are computed in fp32 (fp64
            for fp64 input) so bf16 does not round the preconditioner.
        eps: floor of the row sums (a zero row stays zero; a zero matrix maps to zero).

    Returns:
        Tensor of ``X``'s shape and dtype.

    References:
        Boissin et al., "Turbo-Muon", arXiv 2512.04632; https://github.com/thib-s/flash-newton-schulz.
    """
    check_matrix(X)
    check_compute_dtype(dtype)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    if X.numel() == 0:
        return X.clone()
    shape, out_dtype = X.shape, X.dtype
    transposed = shape[-2] > shape[-1]
    Y = X.mT if transposed else X  # (..., k, K), k <= K
    Y = normalize(Y, 1.0, 0.0, torch.promote_types(X.dtype, torch.float32))  # a zero matrix stays zero
    lead, (k, K) = Y.shape[:-2], Y.shape[-2:]
    Y = Y.reshape(-1, k, K)  # (B, k, K)
    # The AOL factors in the (at least fp32) normalisation dtype, then one cast to the compute dtype.
    A = torch.bmm(Y, Y.mT)  # (B, k, k)
    s = A.abs().sum(dim=-1).clamp_min(eps).rsqrt()  # (B, k)
    compute = dtype if dtype is not None else out_dtype
    Y = (Y * s.unsqueeze(-1)).to(compute)
    A = (A * s.unsqueeze(-1) * s.unsqueeze(-2)).to(compute)
    # The iterates keep Y's layout (a tall input's wide view is a transposed one; BLAS writes the transposed
    # product), so a tall result comes back contiguous rather than as the transposed view of a wide one,
    # which elementwise ops with the parameters would read strided (docs/BENCHMARKS.md).
    like = (lambda T: None) if torch.compiler.is_compiling() else torch.empty_like  # out=None: functional
    for t, (a, b, c) in enumerate(turbo_coefficients(steps, schedule)):
        if t > 0:
            A = torch.bmm(Y, Y.mT)
        B = b * A if c == 0.0 else torch.baddbmm(A, A, A, beta=b, alpha=c)  # b*A + c*A@A
        Y = torch.baddbmm(Y, B, Y, beta=a, alpha=1.0, out=like(Y))  # a*X + B@X
    Y = Y.reshape(*lead, k, K)
    if transposed:
        Y = Y.mT
    return Y.to(out_dtype)
