"""TrasMuon (authors' code v2.1) as a plain per-matrix loop, from secondary_optimizers.md §1.2.

No batching, no shell, Python control flow on the step count. The orthogonalizer is passed in
(exact SVD polar factor in the tests).
"""

from __future__ import annotations

import math

import torch

from tests.reference.muon import polar


def trasmuon_init(m: int, n: int, dtype=torch.float64) -> dict:
    """Fresh state of one m x n matrix (section 1.2 table)."""
    return {
        "t": 0, "M": torch.zeros(m, n, dtype=dtype), "v": torch.zeros(m, dtype=dtype),
        "c_ema": torch.ones(n, dtype=dtype), "c_last": torch.ones(n, dtype=dtype),
        "E_ref": 0.0, "S": 0.0, "C": torch.zeros(n, dtype=dtype), "c_avg": torch.ones(n, dtype=dtype),
    }


def trasmuon_step(W, G, st, *, lr, momentum, beta2, eps, weight_decay, scale_factor, col_gate_enabled,
                  col_gate_use, energy_quantile, col_gate_alpha, col_gate_cmin, energy_k, use_energy_trigger,
                  gate_ema, col_gate_every, col_gate_min_in, e_ref_ema_beta, warmup_steps, sf_enabled, sf_mix,
                  sf_exclude_warmup):
    """One TrasMuon step on a single matrix (returns new W; updates the state dict ``st``)."""
    shape = W.shape
    W2, g = W.reshape(shape[0], -1), G.reshape(shape[0], -1)
    m, n = W2.shape
    st["t"] += 1
    t = st["t"]
    W2 = W2 * (1 - lr * weight_decay)  # 2. decay first
    st["M"] = momentum * st["M"] + (1 - momentum) * g  # 3.
    M = st["M"]
    warm = warmup_steps > 0 and t <= warmup_steps  # 4.
    O = polar(M)  # 5.
    st["v"] = beta2 * st["v"] + (1 - beta2) * (O * O).mean(dim=1)  # 6.
    B = O / (torch.sqrt(st["v"]) + eps)[:, None]  # 7.
    eta_hat = scale_factor * lr * math.sqrt(m * n) / (torch.linalg.norm(B) + 1e-12)  # 8.
    X = {"m": M, "g": g, "b": B}[col_gate_use]  # 9.
    e = (X * X).sum(dim=0)
    k = min(max(int(math.floor(energy_quantile * n + 0.5)), 1), n)  # 10.
    E_cur = torch.sort(e).values[k - 1]
    st["E_ref"] = E_cur if t == 1 else e_ref_ema_beta * st["E_ref"] + (1 - e_ref_ema_beta) * E_cur
    gate_on = col_gate_enabled and n >= col_gate_min_in
    if sf_enabled:  # 11.
        gamma = lr
        a = 0.0 if (warm and sf_exclude_warmup) else 1.0
        c_prev = st["c_last"] if (gate_on and not (warm and not sf_exclude_warmup)) else torch.ones(n, dtype=W.dtype)
        st["S"] = st["S"] + a * gamma**2
        st["C"] = st["C"] + a * gamma**2 * c_prev
        if st["S"] > 0:
            st["c_avg"] = st["C"] / (st["S"] + 1e-12)
    if gate_on:  # 12.
        r = e / (st["E_ref"] + 1e-12)
        c_hat = torch.clamp(1 / (1 + col_gate_alpha * torch.log(1 + r)), col_gate_cmin, 1.0)
        if use_energy_trigger:
            c_hat = torch.where(r > energy_k, c_hat, torch.ones_like(c_hat))
        if not warm and (t % col_gate_every == 0 or t == 1):
            st["c_ema"] = gate_ema * st["c_ema"] + (1 - gate_ema) * c_hat
    if warm or not gate_on:  # 13.
        c_used = torch.ones(n, dtype=W.dtype)
    else:
        c_used = (1 - sf_mix) * st["c_ema"] + sf_mix * st["c_avg"] if sf_enabled else st["c_ema"]
    st["c_last"] = c_used
    W2 = W2 - eta_hat * B * c_used[None, :]  # 14.
    return W2.reshape(shape)
