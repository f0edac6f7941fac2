"""Error-feedback Muon as a plain per-matrix loop, written from the error-feedback template with a
scaled orthogonal compressor, ``(||P||_* / min(m, n)) polar(P)`` (our reconstruction of arXiv
2605.08980; EF-signSGD's ``(||p||_1 / d) sign(p)`` of arXiv 1901.09847 with the spectral norm pair).
"""

from __future__ import annotations

import torch

from tests.reference.muon import polar


def ef_muon_step(W, G, M, E, *, lr, momentum, nesterov, weight_decay):
    """One EF-Muon step on a single matrix (returns new W, M, E); conv weights as (out, rest)."""
    shape = W.shape
    W2, G2 = W.reshape(shape[0], -1), G.reshape(shape[0], -1)
    m, n = W2.shape
    M = momentum * M + (1 - momentum) * G2
    U = (1 - momentum) * G2 + momentum * M if nesterov else M
    P = E + lr * U
    nuclear = torch.linalg.svdvals(P).sum()
    D = nuclear / min(m, n) * polar(P)
    E = P - D
    W2 = W2 * (1 - lr * weight_decay) - D
    return W2.reshape(shape), M, E
