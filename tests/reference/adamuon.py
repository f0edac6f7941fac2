"""AdaMuon as a plain per-matrix loop, written from optimizers.md §5 (no batching, no shell)."""

from __future__ import annotations

import math

import torch



def polar(X: torch.Tensor) -> torch.Tensor:
    """Polar factor U V^T with singular values below max(m, n) * eps * sigma_max dropped (fp64 SVD).

    sign(U) is often exactly rank deficient (a +-1 matrix), where U V^T is not unique; dropping the
    null directions gives the partial isometry that odd polynomials (Newton-Schulz) converge to.
    """
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    keep = (S > max(X.shape) * torch.finfo(X.dtype).eps * S.max()).to(X.dtype)
    return (U * keep) @ Vh


def adamuon_step(W, G, M, V, *, lr, momentum, eps, weight_decay, sign_before_orth, nesterov):
    """One AdaMuon step on a single matrix (returns new W, M, V); conv weights as (out, rest)."""
    shape = W.shape
    W2, G2 = W.reshape(shape[0], -1), G.reshape(shape[0], -1)
    m, n = W2.shape
    M = momentum * M + (1 - momentum) * G2
    U = (1 - momentum) * G2 + momentum * M if nesterov else M
    O = polar(torch.sign(U) if sign_before_orth else U)
    V = momentum * V + (1 - momentum) * O * O
    Oh = O / (torch.sqrt(V) + eps)
    Oh = Oh * 0.2 * math.sqrt(m * n) / (torch.linalg.norm(Oh) + eps)
    W2 = W2 * (1 - lr * weight_decay) - lr * Oh
    return W2.reshape(shape), M, V
