"""NorMuon as a plain per-matrix loop, written from optimizers.md §4 (no batching, no shell)."""

from __future__ import annotations

import math

import torch

from tests.reference.muon import polar


def normuon_step(W, G, M, v, *, lr, momentum, beta2, eps, weight_decay, variant, nesterov):
    """One NorMuon step on a single matrix (returns new W, M, v); conv weights as (out, rest).

    ``M`` is (m, n) and ``v`` is (m, 1). Official: keep ||O||_F, then sqrt(max(1, m/n)).
    Paper: rescale to RMS 0.2 with 0.2 sqrt(mn) / ||O^||_F.
    """
    shape = W.shape
    W2, G2 = W.reshape(shape[0], -1), G.reshape(shape[0], -1)
    m, n = W2.shape
    M = momentum * M + (1 - momentum) * G2
    U = (1 - momentum) * G2 + momentum * M if nesterov else M
    O = polar(U)
    v = beta2 * v + (1 - beta2) * (O * O).mean(dim=1, keepdim=True)
    Oh = O / (torch.sqrt(v) + eps)
    if variant == "official":
        Oh = Oh * torch.linalg.norm(O) / (torch.linalg.norm(Oh) + eps)
        step = lr * math.sqrt(max(1.0, m / n))
    else:
        norm = torch.linalg.norm(Oh)  # the paper's eta^ = 0.2 eta sqrt(mn) / ||O^||_F: no eps
        step = lr * 0.2 * math.sqrt(m * n) / norm if norm > 0 else 0.0
    W2 = W2 * (1 - lr * weight_decay) - step * Oh
    return W2.reshape(shape), M, v
