"""AdaGO as a plain per-matrix loop, written from namo_adago.md §4.2 (no batching, no shell).

Plus the library's two opt-in extras, written out here too: decoupled weight decay
``W <- W (1 - lr wd)`` and a shape factor on the step (``adjust_lr``, as in Muon).
"""

from __future__ import annotations

import math

import torch

from tests.reference.muon import polar


def adago_step(W, G, M, s, *, lr, momentum, gamma, eps, nesterov=False, wd=0.0, adjust_lr="none"):
    """One AdaGO step on a single matrix; returns (new W, new M, new s), s the sum of squares."""
    shape = W.shape
    W2, G2 = W.reshape(shape[0], -1), G.reshape(shape[0], -1)
    m, n = W2.shape
    M = momentum * M + (1 - momentum) * G2
    U = momentum * M + (1 - momentum) * G2 if nesterov else M
    g = min(float(torch.linalg.norm(G2)), gamma)
    s = s + g * g
    alpha = max(eps, lr * g / math.sqrt(s) if s > 0 else 0.0)
    factor = {"spectral": math.sqrt(max(1.0, m / n)), "rms": 0.2 * math.sqrt(max(m, n)), "none": 1.0}[adjust_lr]
    W2 = W2 * (1 - lr * wd) - alpha * factor * polar(U)
    return W2.reshape(shape), M, s
