"""Adam with beta1 = beta2 = beta as a plain elementwise loop (Kingma & Ba's Adam with the decoupled
decay of Loshchilov & Hutter; the single-beta setting of Orvieto & Gower, arXiv 2505.21829)."""

from __future__ import annotations

import torch


def adam_single_beta_step(W, g, m, v, t, *, lr, beta, eps, weight_decay):
    """One step (t is 1-based after the step); returns new W, m, v."""
    W = W * (1 - lr * weight_decay)
    m = beta * m + (1 - beta) * g
    v = beta * v + (1 - beta) * g * g
    m_hat = m / (1 - beta**t)
    v_hat = v / (1 - beta**t)
    return W - lr * m_hat / (torch.sqrt(v_hat) + eps), m, v
