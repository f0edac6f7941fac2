"""Error feedback on NAMO, NAMO-D and NorMuon as plain per-matrix loops (fp64, exact polar factor).

Written from the error-feedback template (Karimireddy et al., arXiv 1901.09847; our reconstruction of
Parshakova et al., arXiv 2605.08980) with each preset's direction as the compressor, from the
preset's own formulas (namo_adago.md §2-3, optimizers.md §4), not from muonlab's stages::

    P = E + lr U ;  D = Dir(P) ;  a = <P, D> / ||D||_F^2 ;  E = P - a D ;  W = W * decay - a D

* NAMO:    Dir(P) = polar(P); alpha (from M~ and G, as in NAMO) only enters the decay.
* NAMO-D:  Dir(P) = polar(P) diag(step_j), the per-column rates d_j (official: min(d_j s, 1));
           column decay as in NAMO-D.
* NorMuon: Dir(P) = the row-normalised polar(P), v fed by polar(P).

Muon's loop (the nuclear-norm form) is in ``tests/reference/error_feedback.py``.
"""

from __future__ import annotations

import math

import torch

from tests.reference.muon import polar
from tests.reference.namo import _bias, _momentum, clamp_columns, shape_factor


def project(P: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """The least-squares multiple ``a D`` of ``D`` closest to ``P`` (0 for ``D = 0``)."""
    den = float((D * D).sum())
    return D * (float((P * D).sum()) / den) if den > 0 else torch.zeros_like(D)


def ef_namo_step(W, G, st, E, *, lr, mu1, mu2, eps, wd, nesterov, variant, kappa=0.2, conv_shape="leading",
                 decay="adaptive"):
    """One EF-NAMO step on a single matrix; returns (W, E) (``st``: a ``NamoState``, updated in place)."""
    shape = W.shape
    W2, G2 = W.reshape(shape[0], -1), G.reshape(shape[0], -1)
    Mt = _momentum(G2, st, mu1, nesterov)
    st.v = mu2 * st.v + (1 - mu2) * torch.sum(G2 * G2)
    st.t += 1
    den = math.sqrt(float(st.v)) + eps
    alpha = lr * _bias(st.t, mu1, mu2, variant) * (float(torch.linalg.norm(Mt)) / den if den > 0 else 0.0)
    P = E + lr * Mt
    m, n = P.shape
    step = float(torch.linalg.svdvals(P).sum()) / min(m, n) * polar(P)  # (||P||_* / min(m, n)) polar(P)
    if decay == "adamw":
        factor = 1 - lr * wd
    elif variant == "official":
        factor = 1 - wd * min(alpha, 1.0)
    else:
        factor = 1 - alpha * wd  # the paper's W - alpha (O + wd W): the decay part
    return (W2 * factor - step).reshape(shape), P - step


def ef_namo_d_step(W, G, st, E, *, lr, mu1, mu2, eps, wd, nesterov, variant, c, kappa=0.2, conv_shape="leading",
                   decay="adaptive"):
    """One EF-NAMO-D step on a single matrix, rates column by column; returns (W, E)."""
    shape = W.shape
    W2, G2 = W.reshape(shape[0], -1).clone(), G.reshape(shape[0], -1)
    n = W2.shape[1]
    Mt = _momentum(G2, st, mu1, nesterov)
    st.v = mu2 * st.v + (1 - mu2) * torch.sum(G2 * G2, dim=0)
    st.t += 1
    beta = lr * _bias(st.t, mu1, mu2, variant)
    r = []
    for j in range(n):
        den = math.sqrt(float(st.v[j])) + eps
        r.append(float(torch.linalg.norm(Mt[:, j])) / den if den > 0 else 0.0)
    r = clamp_columns(r, c)
    s = shape_factor(W, kappa, conv_shape)
    d = [beta * x for x in r]
    rates = [min(x * s, 1.0) if variant == "official" else x for x in d]
    P = E + lr * Mt
    O = polar(P)
    D = O.clone()
    for j in range(n):
        D[:, j] = rates[j] * O[:, j]
    step = project(P, D)
    for j in range(n):
        if decay == "adamw":
            f = 1 - lr * wd
        elif variant == "official":
            f = max(0.0, 1 - wd * min(d[j], 1.0))
        else:
            f = 1 - d[j] * wd
        W2[:, j] = W2[:, j] * f - step[:, j]
    return W2.reshape(shape), P - step


def ef_normuon_step(W, G, M, v, E, *, lr, momentum, beta2, eps, weight_decay, variant, nesterov):
    """One EF-NorMuon step on a single matrix; returns (W, M, v, E); ``v`` is (m, 1)."""
    shape = W.shape
    W2, G2 = W.reshape(shape[0], -1), G.reshape(shape[0], -1)
    m, n = W2.shape
    M = momentum * M + (1 - momentum) * G2
    U = (1 - momentum) * G2 + momentum * M if nesterov else M
    P = E + lr * U
    O = polar(P)
    v = beta2 * v + (1 - beta2) * (O * O).mean(dim=1, keepdim=True)
    Oh = O / (torch.sqrt(v) + eps)
    # NorMuon's per-matrix rescale (official: back to ||O||_F; paper: RMS 0.2) is a positive scalar:
    # it cannot change the projection, and is left out here on purpose (the test then checks that).
    step = project(P, Oh)
    return (W2 * (1 - lr * weight_decay) - step).reshape(shape), M, v, P - step
