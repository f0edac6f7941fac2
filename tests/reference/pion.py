"""Pion as a plain per-matrix loop in fp64, written from the paper's update rule (arXiv 2605.12492).

Formulas as in optimizers.md §8.2 / secondary_optimizers.md §3 (rollfast's reading of the paper):
skew Lie-algebra gradients on both sides, Adam moments on them, RMS-normalised step, second-order
truncated exponential, one side per step in the alternating mode (out side first). No batching, no
stacking, explicit identity matrices, every product spelled out.
"""

from __future__ import annotations

import math

import torch


def e2(X: torch.Tensor) -> torch.Tensor:
    """I + X + X^2 / 2."""
    eye = torch.eye(X.shape[0], dtype=X.dtype)
    return eye + X + 0.5 * (X @ X)


def pion_step(W, G, state, t, *, lr, betas, eps, rms_scale, alternating, weight_decay):
    """One Pion step (step number ``t`` >= 1) on one matrix; conv weights as (out, rest).

    ``state`` is a dict with ``m_in, v_in`` (n, n) and ``m_out, v_out`` (m, m), updated and returned.
    """
    shape = W.shape
    W = W.reshape(shape[0], -1)
    G = G.reshape(shape[0], -1)
    m, n = W.shape
    b1, b2 = betas
    G_in = W.T @ G - G.T @ W
    G_out = G @ W.T - W @ G.T
    st = dict(state)
    st["m_in"] = b1 * st["m_in"] + (1 - b1) * G_in
    st["v_in"] = b2 * st["v_in"] + (1 - b2) * G_in * G_in
    st["m_out"] = b1 * st["m_out"] + (1 - b1) * G_out
    st["v_out"] = b2 * st["v_out"] + (1 - b2) * G_out * G_out
    A_in = -st["m_in"] / (torch.sqrt(st["v_in"]) + eps)
    A_out = -st["m_out"] / (torch.sqrt(st["v_out"]) + eps)
    if alternating:
        if t % 2 == 1:  # odd steps: the left (out) side only
            direction = A_out @ W
            alpha = rms_scale * math.sqrt(m * n) / (torch.linalg.norm(direction) + eps)
            W_new = e2(lr * alpha * A_out) @ W
        else:
            direction = W @ A_in
            alpha = rms_scale * math.sqrt(m * n) / (torch.linalg.norm(direction) + eps)
            W_new = W @ e2(lr * alpha * A_in)
    else:
        direction = A_out @ W + W @ A_in
        alpha = rms_scale * math.sqrt(m * n) / (torch.linalg.norm(direction) + eps)
        W_new = e2(lr * alpha * A_out) @ W @ e2(lr * alpha * A_in)
    W_new = W_new - lr * weight_decay * W  # decoupled decay (muonlab option, 0 in the paper)
    return W_new.reshape(shape), st


def pion_state(shape) -> dict:
    """Zero moments for a parameter of ``shape`` (viewed as (out, rest))."""
    m, n = shape[0], math.prod(shape[1:])
    z = lambda d: torch.zeros(d, d, dtype=torch.float64)  # noqa: E731
    return {"m_in": z(n), "v_in": z(n), "m_out": z(m), "v_out": z(m)}
