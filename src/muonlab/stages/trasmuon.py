"""TrasMuon's RMS calibration and column-energy trust region (authors' code v2.1).

Two stages, applied after momentum and orthogonalization:

* :func:`calibrate_rms` -- NorMuon-style row normalisation ``B = O / (sqrt(v) + eps)``, then the
  global RMS calibration ``eta_hat = s * eta * sqrt(mn) / ||B||_F`` (RMS of ``eta_hat * B`` is
  ``s * eta``). The calibration goes into ``stack.step_size`` so ``B`` itself stays in
  ``stack.update`` (it is one of the energy sources of the gate).
* :func:`gate_columns` -- the trust region: column (input-feature) energies ``e_j`` of the momentum
  are compared with an EMA ``E_ref`` of their median; columns with ``e_j / E_ref > k_E`` get a damping
  factor ``c_hat_j = clamp(1 / (1 + alpha ln(1 + r_j)), c_min, 1)``, which enters a slow EMA ``c_ema``
  (refreshed on step 1 and every ``P`` steps), optionally mixed with a lr^2-weighted running average
  of past gates ("schedule-free" smoothing of the gate vector). The update is ``B * c_used`` by column.

Every step-dependent decision (first-step ``E_ref``, the every-``P`` refresh, warmup) is a
``torch.where`` on the ``(k,)`` step tensor, so nothing is read back from the device.

References:
    Cheng, Zang, Li, Ma, Cui, Zhang, Chen, Jian, Tong, "TrasMuon: Trust-Region Adaptive Scaling for
    Orthogonalized Momentum Optimizers", arXiv 2602.13498; authors' code ``trasmuon-pytorch`` 0.1.0 (TrasMuon v2.1),
    https://github.com/zangjiucheng/TrasMuon (PyPI trasmuon-pytorch 0.1.0, v2.1).
"""

from __future__ import annotations

import math

import torch

from .base import Stack, stat_dtype
from .normuon import divide_rows, frobenius

#: values of the group key ``col_gate_use`` (energy source): momentum, raw gradient, row-normalised update
ENERGY_SOURCES = ("m", "g", "b")
#: guard of the calibration and of the energy ratio (authors' code: 1e-12 in both places)
_TINY = 1e-12


def calibrate_rms(stack: Stack) -> None:
    """Row normalisation (state ``trasmuon.v``, shape ``(m,)``) and global RMS calibration.

    Group keys: ``beta2``, ``eps``, ``scale_factor`` (s).

    .. code-block:: text

        v       <- beta2 v + (1 - beta2) mean_j O_ij^2
        B       <- O / (sqrt(v) + eps)                        # eps outside the sqrt
        eta_hat <- s * eta * sqrt(mn) / (||B||_F + 1e-12)     # step_size; update stays B
    """
    group = stack.group
    m, n = stack.shape[-2:]
    B = divide_rows(stack, "trasmuon.v", group["beta2"], group["eps"], "m")
    stack.update = B
    (norm,) = frobenius(stack, B)
    stack.step_size = stack.step_size * (group["scale_factor"] * math.sqrt(m * n) / (norm + _TINY))


def _column_energy(stack: Stack, X: torch.Tensor) -> torch.Tensor:
    """``e_j = sum_i X_ij^2`` per matrix, shape ``(k, n)``, in the statistics dtype (fp64).

    Computed as squared overflow-safe column norms: with 1e30 gradients ``X^2`` overflows fp32, and
    the energies, their reference and the ratios ``e_j / E_ref`` must stay the formula's values.
    """
    (norm,) = stack.norms((X, -2), dtype=stat_dtype(X.device))
    return norm.square()


def gate_columns(stack: Stack) -> None:
    """The column-energy trust region with schedule-free smoothing of the gate.

    State (per matrix): ``trasmuon.e_ref`` (), ``trasmuon.c_ema`` (n,) (gate active only),
    ``trasmuon.c_last`` (n,), and with SF on ``trasmuon.sf_s`` () and ``trasmuon.sf_c`` (n,), the sums
    ``S = sum a lr^2`` and ``C = sum a lr^2 c_last`` (``c_avg = C / (S + 1e-12)`` is recomputed).

    Group keys: ``col_gate_enabled``, ``col_gate_use``, ``energy_quantile`` (q), ``col_gate_alpha``
    (alpha), ``col_gate_cmin`` (c_min), ``energy_k`` (k_E), ``use_energy_trigger``, ``gate_ema`` (rho),
    ``col_gate_every`` (P), ``col_gate_min_in``, ``e_ref_ema_beta`` (beta_E), ``warmup_steps`` (T_w),
    ``sf_enabled``, ``sf_mix`` (mu_sf), ``sf_exclude_warmup``, ``lr`` (gamma of the SF average).

    .. code-block:: text

        e_j   <- sum_i X_ij^2,  X = M | g | B                   # column energies, (k, n)
        E_cur <- k-th smallest e_j, k = clamp(floor(q n + 0.5), 1, n)
        E_ref <- E_cur if t = 1 else beta_E E_ref + (1 - beta_E) E_cur
        SF:     S <- S + a lr^2;  C <- C + a lr^2 c_last;  c_avg <- C / (S + 1e-12) if S > 0
                (a = 0 during warmup when sf_exclude_warmup, else 1)
        gate (enabled and n >= min_in):
            r_j   <- e_j / (E_ref + 1e-12)
            c^_j  <- clamp(1 / (1 + alpha ln(1 + r_j)), c_min, 1);  trigger: c^_j <- 1 where r_j <= k_E
            c_ema <- rho c_ema + (1 - rho) c^   if not warm and (t mod P = 0 or t = 1)
            c_used <- (1 - mu_sf) c_ema + mu_sf c_avg  (SF on)  |  c_ema  (SF off);  1 while warm
        else c_used <- 1
        c_last <- c_used;  U <- B * c_used (column j scaled by c_used_j)
    """
    group = stack.group
    B = stack.update  # (k, m, n)
    n = stack.shape[-1]
    t = stack.step  # (k,), this step included
    warmup = group["warmup_steps"]
    warm = t <= warmup if warmup > 0 else torch.zeros_like(t, dtype=torch.bool)  # (k,)

    # Column energies and their running reference (updated every step, warmup included).
    source = group["col_gate_use"]
    X = stack.buffer("momentum") if source == "m" else stack.grad if source == "g" else B
    e = _column_energy(stack, X)  # (k, n)
    rank = min(max(int(math.floor(group["energy_quantile"] * n + 0.5)), 1), n)  # lower median for even n
    E_cur = stack.kthvalue_cols(e, rank)  # (k,)
    E_ref = stack.buffer("trasmuon.e_ref", "", dtype=e.dtype)  # fp64, as the energies
    E_ref.copy_(torch.where(t == 1, E_cur, E_ref.lerp(E_cur, 1 - group["e_ref_ema_beta"])))

    c_last = stack.buffer("trasmuon.c_last", "n", fill=1.0)  # the previous step's c_used
    if group["sf_enabled"]:
        # Weighted (gamma = lr) running average of past gates; lagged one step because it reads
        # c_last before c_last is overwritten (authors' code).
        lr = stack.hp("lr")
        a = ~(warm & group["sf_exclude_warmup"])  # (k,)
        w = (a.to(B.dtype) * lr * lr).unsqueeze(-1)  # (k, 1)
        S = stack.buffer("trasmuon.sf_s", "")
        C = stack.buffer("trasmuon.sf_c", "n")
        S.add_(w.squeeze(-1))
        C.add_(w * c_last)
        # The authors keep c_avg as state, updated only while S > 0; S never decreases, so S = 0 means
        # it always was and c_avg is still its initial 1: c_avg is a function of (S, C), not state.
        S_ = S.unsqueeze(-1)  # (k, 1)
        c_avg = torch.where(S_ > 0, C / (S_ + _TINY), torch.ones_like(C))

    if group["col_gate_enabled"] and n >= group["col_gate_min_in"]:
        r = (e / (E_ref.unsqueeze(-1) + _TINY)).to(B.dtype)  # (k, n): a ratio, back in the compute dtype
        c_hat = (1.0 / (1.0 + group["col_gate_alpha"] * torch.log1p(r))).clamp(group["col_gate_cmin"], 1.0)
        if group["use_energy_trigger"]:
            c_hat = torch.where(r > group["energy_k"], c_hat, torch.ones_like(c_hat))
        c_ema = stack.buffer("trasmuon.c_ema", "n", fill=1.0)
        refresh = ~warm & ((torch.remainder(t, group["col_gate_every"]) == 0) | (t == 1))  # (k,)
        c_ema.copy_(torch.where(refresh.unsqueeze(-1), c_ema.lerp(c_hat, 1 - group["gate_ema"]), c_ema))
        mu = group["sf_mix"]
        c_used = (1 - mu) * c_ema + mu * c_avg if group["sf_enabled"] else c_ema
        c_used = torch.where(warm.unsqueeze(-1), torch.ones_like(c_used), c_used)  # (k, n)
        # U = B * c_used by column, as a (k, 1, n) step size: every later stage and the write use
        # step_size * update, so no full-size pass or temporary is spent on it.
        stack.step_size = stack.step_size * c_used.unsqueeze(-2)
    else:
        c_used = torch.ones_like(c_last)
    c_last.copy_(c_used)
