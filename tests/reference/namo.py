"""NAMO and NAMO-D as plain per-matrix loops, written from namo_adago.md §2.2/§2.3 and §3.2/§3.3.

No batching, no shell, no stages: one matrix at a time, Python floats for everything the official
code keeps on the host (bias corrections), exact SVD polar factor. Conv weights use the
``(out, rest)`` view for the maths; the official shape factor reads ``W.shape[:2]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tests.reference.muon import polar


@dataclass
class NamoState:
    """Per-matrix state: momentum M (2-D view), v (scalar, or a length-n vector for NAMO-D), t."""

    M: torch.Tensor
    v: torch.Tensor
    t: int = 0


def init_state(W: torch.Tensor, columns: bool = False) -> NamoState:
    """Zero state for W (NAMO-D: v has one entry per column of the 2-D view)."""
    A = W.shape[0]
    n = W.numel() // A
    return NamoState(M=torch.zeros(A, n, dtype=W.dtype), v=torch.zeros(n if columns else (), dtype=W.dtype))


def shape_factor(W: torch.Tensor, kappa: float, conv_shape: str) -> float:
    """kappa * sqrt(max(A, B)) with A, B = W.shape[:2] (official) or the flattened view."""
    if conv_shape == "leading" and W.dim() > 2:
        A, B = W.shape[0], W.shape[1]
    else:
        A, B = W.shape[0], W.numel() // W.shape[0]
    return kappa * math.sqrt(max(A, B))


def _momentum(G2, st, mu1, nesterov):
    st.M = mu1 * st.M + (1 - mu1) * G2
    return mu1 * st.M + (1 - mu1) * G2 if nesterov else st.M


def _bias(t, mu1, mu2, variant):
    b1, b2 = 1 - mu1**t, 1 - mu2**t
    return math.sqrt(b2) / (b1 + (1e-12 if variant == "official" else 0.0))


def namo_step(W, G, st, *, lr, mu1, mu2, eps, wd, nesterov, variant, kappa=0.2, conv_shape="leading", decay="adaptive"):
    """One NAMO step on a single matrix; returns the new W (st is updated in place)."""
    shape = W.shape
    W2, G2 = W.reshape(shape[0], -1), G.reshape(shape[0], -1)
    Mt = _momentum(G2, st, mu1, nesterov)
    st.v = mu2 * st.v + (1 - mu2) * torch.sum(G2 * G2)
    st.t += 1
    den = math.sqrt(float(st.v)) + eps
    alpha = lr * _bias(st.t, mu1, mu2, variant) * (float(torch.linalg.norm(Mt)) / den if den > 0 else 0.0)
    O = polar(Mt)
    if decay == "adamw":  # AdamW-style decoupled decay with the base lr, then the variant's step
        W2 = W2 * (1 - lr * wd)
        step = min(alpha * shape_factor(W, kappa, conv_shape), 1.0) if variant == "official" else alpha
        W2 = W2 - step * O
    elif variant == "official":
        W2 = W2 * (1 - wd * min(alpha, 1.0))
        W2 = W2 - min(alpha * shape_factor(W, kappa, conv_shape), 1.0) * O
    else:
        W2 = W2 - alpha * (O + wd * W2)
    return W2.reshape(shape)


def clamp_columns(r: list[float], c: float) -> list[float]:
    """Clip each ratio into [c mean, mean / c] (NaN-aware mean of the pre-clamp values)."""
    if not 0 < c <= 1:
        return list(r)
    finite = [x for x in r if not math.isnan(x)]
    mean = sum(finite) / len(finite) if finite else math.nan
    if math.isfinite(mean) and mean > 0:
        lo, hi = c * mean, mean / c
    else:
        lo, hi = 0.0, math.inf
    return [x if math.isnan(x) else min(max(x, lo), hi) for x in r]


def namo_d_step(W, G, st, *, lr, mu1, mu2, eps, wd, nesterov, variant, c, kappa=0.2, conv_shape="leading",
                decay="adaptive"):
    """One NAMO-D step on a single matrix, column by column; returns the new W."""
    shape = W.shape
    W2, G2 = W.reshape(shape[0], -1).clone(), G.reshape(shape[0], -1)
    n = W2.shape[1]
    Mt = _momentum(G2, st, mu1, nesterov)
    st.v = mu2 * st.v + (1 - mu2) * torch.sum(G2 * G2, dim=0)
    st.t += 1
    O = polar(Mt)
    beta = lr * _bias(st.t, mu1, mu2, variant)
    r = []
    for j in range(n):
        den = math.sqrt(float(st.v[j])) + eps
        r.append(float(torch.linalg.norm(Mt[:, j])) / den if den > 0 else 0.0)
    r = clamp_columns(r, c)
    s = shape_factor(W, kappa, conv_shape)
    for j in range(n):
        d = beta * r[j]
        if decay == "adamw":
            step = min(d * s, 1.0) if variant == "official" else d
            W2[:, j] = W2[:, j] * (1 - lr * wd) - step * O[:, j]
        elif variant == "official":
            W2[:, j] = W2[:, j] * max(0.0, 1 - wd * min(d, 1.0)) - min(d * s, 1.0) * O[:, j]
        else:
            W2[:, j] = W2[:, j] - d * (O[:, j] + wd * W2[:, j])
    return W2.reshape(shape)
