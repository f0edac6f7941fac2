"""SF-NorMuon as a plain per-matrix loop, written from the published update (arXiv 2605.23061, as
catalogued by the zij notes) with Defazio et al.'s schedule-free averaging (arXiv 2405.15682).

The loop keeps the three points x, y, z explicitly (the optimizer stores z only and eliminates x);
no batching, no shell.
"""

from __future__ import annotations

import math

import torch

from tests.reference.muon import polar


def sf_weights(t, *, lr, warmup_steps):
    """``lr_t = lr * min(1, t / warmup_steps)`` (1-based t)."""
    return lr * (min(1.0, t / warmup_steps) if warmup_steps else 1.0)


class SFPoint:
    """x, y, z of one parameter (2-D view for matrices) and the running sum of lr_t^2."""

    def __init__(self, W):
        self.x, self.y, self.z = W.clone(), W.clone(), W.clone()
        self.s = 0.0
        self.t = 0

    def average_and_interpolate(self, *, lr_t, sf_momentum):
        """``s += lr_t^2; c = lr_t^2 / s; x <- (1-c) x + c z; y <- (1-beta) z + beta x``."""
        self.s += lr_t**2
        c = lr_t**2 / self.s if self.s > 0 else 0.0
        self.x = (1 - c) * self.x + c * self.z
        self.y = (1 - sf_momentum) * self.z + sf_momentum * self.x


def sfnormuon_step(pt, G, M, v, *, lr, momentum, sf_momentum, beta2, eps, weight_decay, warmup_steps, nesterov=False):
    """One SF-NorMuon step on one matrix point ``pt`` (views (m, n)); G is the gradient at ``pt.y``."""
    pt.t += 1
    m, n = pt.z.shape
    M = momentum * M + (1 - momentum) * G
    U = (1 - momentum) * G + momentum * M if nesterov else M
    P = polar(U)
    v = beta2 * v + (1 - beta2) * (P * P).mean(dim=1, keepdim=True)
    Ph = P / (torch.sqrt(v) + eps)
    lr_t = sf_weights(pt.t, lr=lr, warmup_steps=warmup_steps)
    norm = torch.linalg.norm(Ph)  # eta^_t = 0.2 eta_t sqrt(mn) / ||P^||_F as published: no eps
    hat = 0.2 * lr_t * math.sqrt(m * n) / norm if norm > 0 else 0.0
    pt.z = pt.z - lr * weight_decay * pt.z - hat * Ph  # weight decay at the fast iterate, base lr
    pt.average_and_interpolate(lr_t=lr_t, sf_momentum=sf_momentum)
    return M, v


def sfadamw_step(pt, g, m, v, *, lr, betas, eps, weight_decay, sf_momentum, warmup_steps):
    """The AdamW part: one bias-corrected AdamW step taken by z, then the same averaging."""
    pt.t += 1
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    lr_t = sf_weights(pt.t, lr=lr, warmup_steps=warmup_steps)
    u = (m / (1 - b1**pt.t)) / (torch.sqrt(v / (1 - b2**pt.t)) + eps)
    pt.z = pt.z * (1 - lr * weight_decay) - lr_t * u
    pt.average_and_interpolate(lr_t=lr_t, sf_momentum=sf_momentum)
    return m, v
