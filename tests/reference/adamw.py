"""AdamW written from the paper, one parameter at a time, no batching (Loshchilov & Hutter, arXiv 1711.05101)."""

from __future__ import annotations

import torch


def adamw_step(W: torch.Tensor, G: torch.Tensor, m: torch.Tensor, v: torch.Tensor, t: int, *,
               lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    """One step at count ``t`` (1-based), all tensors updated in place."""
    b1, b2 = betas
    W.mul_(1 - lr * weight_decay)
    m.mul_(b1).add_((1 - b1) * G)
    v.mul_(b2).add_((1 - b2) * G * G)
    m_hat = m / (1 - b1**t)
    v_hat = v / (1 - b2**t)
    W.sub_(lr * m_hat / (v_hat.sqrt() + eps))

