"""Muon as a plain per-matrix loop, written from optimizers.md §3 (no batching, no shell)."""

from __future__ import annotations

import math

import torch


def polar(X: torch.Tensor) -> torch.Tensor:
    """Exact polar factor U V^T of a matrix (fp64 SVD)."""
    U, _, Vh = torch.linalg.svd(X, full_matrices=False)
    return U @ Vh


def muon_step(W, G, M, *, lr, momentum, nesterov, weight_decay, adjust_lr):
    """One Muon step on a single matrix W (returns new W, new M); conv weights as (out, rest)."""
    shape = W.shape
    W2, G2 = W.reshape(shape[0], -1), G.reshape(shape[0], -1)
    m, n = W2.shape
    M = momentum * M + (1 - momentum) * G2
    U = (1 - momentum) * G2 + momentum * M if nesterov else M
    O = polar(U)
    scale = {"spectral": math.sqrt(max(1.0, m / n)), "rms": 0.2 * math.sqrt(max(m, n)), "none": 1.0}[adjust_lr]
    W2 = W2 * (1 - lr * weight_decay) - lr * scale * O
    return W2.reshape(shape), M
