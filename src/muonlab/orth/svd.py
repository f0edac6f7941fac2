"""Exact polar factor via the thin SVD (reference for tests and accuracy tables).

References:
    Higham, "Functions of Matrices: Theory and Computation", SIAM 2008, ch. 8 (polar decomposition).
    The reference the tests compare polynomial methods against: ``U diag(1[sigma > tol]) V^T``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from muonlab.orth.polynomial import check_matrix


def svd_polar(X: Tensor, *, rtol: float | None = None) -> Tensor:
    """Return ``U diag(1[sigma > tol]) V^T`` for every matrix of ``X`` (shape (..., m, n)).

    Singular values at or below ``tol = rtol * sigma_max`` are treated as zero, so
    rank-deficient inputs map to a partial isometry (matching how odd polynomials
    send zero singular values to zero) and a zero matrix maps to exactly zero.

    Args:
        X: tensor of shape (..., m, n); leading dims are a batch.
        rtol: relative tolerance; None uses ``max(m, n) * finfo(compute dtype).eps``,
            the ``numpy.linalg.matrix_rank`` convention.

    Returns:
        The polar factor with ``X``'s shape and dtype. The SVD runs in fp32, or fp64
        for fp64 input (``torch.linalg.svd`` does not support half precisions).

    References:
        Golub & Van Loan, "Matrix Computations", 4th ed., §9.4.3.
    """
    check_matrix(X)
    if rtol is not None and rtol < 0:
        raise ValueError(f"rtol must be >= 0, got {rtol!r}")
    if X.numel() == 0:
        return X.clone()
    work = X.to(torch.promote_types(X.dtype, torch.float32))
    U, S, Vh = torch.linalg.svd(work, full_matrices=False)  # (..., m, k), (..., k), (..., k, n)
    if rtol is None:
        rtol = max(X.shape[-2], X.shape[-1]) * torch.finfo(work.dtype).eps
    tol = rtol * S.amax(dim=-1, keepdim=True)  # (..., 1); zero matrix -> tol 0 -> mask all False
    keep = (S > tol).to(work.dtype)  # (..., k)
    return ((U * keep.unsqueeze(-2)) @ Vh).to(X.dtype)
