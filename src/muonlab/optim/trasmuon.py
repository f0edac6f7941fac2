"""TrasMuon preset: row-normalised Muon with RMS calibration and a column-energy trust region."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .. import orth
from .. import stages as S
from ..stages.error_feedback import with_error_feedback
from ..stages.trasmuon import ENERGY_SOURCES, calibrate_rms, gate_columns
from . import validate as V
from .presets import adamw_defaults
from .registry import register
from .shell import ChainOptimizer


class TrasMuon(ChainOptimizer):
    r"""TrasMuon (authors' code v2.1): Muon + adaptive row scaling + RMS calibration + column trust region.

    .. code-block:: text

        for each hidden matrix W (m x n view, conv weights as (out, rest)) with gradient G, step t:
            W       <- W (1 - eta lambda)                          # decoupled, before the update
            M       <- b1 M + (1 - b1) G                           # EMA, no Nesterov
            O       <- NS(M)                                       # You's 5-step schedule, bf16
            v       <- b2 v + (1 - b2) mean_j O_ij^2;   B <- O / (sqrt(v) + eps)
            eta_hat <- s eta sqrt(mn) / (||B||_F + 1e-12)          # RMS(eta_hat B) = s eta
            e_j     <- sum_i M_ij^2;  E_ref <- EMA_{beta_E} of the q-quantile of e (E_cur at t = 1)
            r_j     <- e_j / E_ref;   c^_j <- clamp(1 / (1 + alpha ln(1 + r_j)), c_min, 1) if r_j > k_E else 1
            c_ema   <- rho c_ema + (1 - rho) c^        on t = 1 and every P steps (not in warmup)
            c_avg   <- sum lr^2 c_last / sum lr^2      # schedule-free average of past gates
            c       <- (1 - mu_sf) c_ema + mu_sf c_avg;  c <- 1 in warmup, or if n < min_in
            W       <- W - eta_hat B diag(c)                       # column j scaled by c_j
        every other parameter: Adam(W) with adamw_lr, adamw_betas, ... (authors: same lr, (0.95, 0.95))
        error_feedback=True (off by default; a reconstruction, see muonlab.stages.error_feedback):
            P <- E + eta M ;  O <- NS(P) ;  B, c as above (c from M's energies) ;  D <- B diag(c)
            E <- P - (<P, D> / ||D||_F^2) D ;  W <- W (1 - eta lambda) - (P - E)   # eta_hat cancels

    With the defaults the gate is binary: a column whose momentum energy exceeds 3x the running
    median gets c^ = 0.7, every other column 1, and c_ema moves slowly (0.97 after one refresh).

    Args:
        params: ``muonlab.param_groups(model)`` (recommended) or a plain iterable of tensors.
        lr: eta (1e-3, authors' code).
        momentum: b1 (authors' ``betas[0]`` = 0.95).
        beta2: b2 of the row second moment (authors' ``betas[1]`` = 0.95).
        eps: row normaliser (1e-8).
        weight_decay: lambda, applied as ``W (1 - eta lambda)`` (0; the README example uses 0.01).
        scale_factor: s, target update RMS in units of lr (0.2).
        col_gate_enabled: use the column trust region (True).
        col_gate_use: energy source, ``"m"`` momentum | ``"g"`` gradient | ``"b"`` row-normalised update.
        energy_quantile: q of the reference energy (0.5: lower median for even n).
        col_gate_alpha: alpha of the soft map (1.0).
        col_gate_cmin: c_min, the floor of the gate (0.7).
        energy_k: k_E, trigger threshold on r (3.0).
        use_energy_trigger: damp only columns with r > k_E (True); False applies the soft map to all.
        gate_ema: rho of c_ema (0.9).
        col_gate_every: P, refresh period of c_ema in steps (4; step 1 always refreshes).
        col_gate_min_in: the gate is off for matrices with fewer columns (8).
        e_ref_ema_beta: beta_E of E_ref (0.99).
        warmup_steps: T_w; for t <= T_w the gate is frozen and c = 1 (0 = no warmup).
        sf_enabled: mix the schedule-free average of past gates into c (True).
        sf_mix: mu_sf (0.3).
        sf_exclude_warmup: leave warmup steps out of the SF average (True).
        ns_steps: orthogonalizer iterations (5; with You's schedule at most 5, as in the authors' code).
        orthogonalizer: registry name or callable (``"auto_you"``: You's 5-step schedule, the authors',
            computed per shape as Newton–Schulz or as the same polynomial on the Gram matrix, whichever has
            fewer FLOPs; ``"you"`` is the plain form).
        ns_eps: ``eps`` of the Newton–Schulz normalization ``X / (||X||_F + eps)`` (1e-8, the authors'
            ``eps``; muonlab's other optimizers use 1e-7 as Jordan's and torch's code). Ignored by
            orthogonalizers without a normalization eps (``"svd"``, callables without ``eps``).
        ns_dtype: compute dtype of the iteration (``"auto"``: bf16 where matmuls are native bf16, else
            fp32; fp64 parameters use fp64).
        batch_3d: treat 3-D parameters as batches of matrices.
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: the Adam part (authors' fallback:
            same lr 1e-3, (0.95, 0.95), 1e-8, same weight decay 0). Pass ``adamw_lr=lr`` and
            ``adamw_weight_decay=weight_decay`` to keep the authors' shared values when you change them.
        error_feedback: keep the residual of each step and feed it into the next (False; our
            reconstruction of Parshakova et al.'s fix, docs/optimizers/error_feedback.md).
        process_group: DDP only: a ``ProcessGroup`` or 1-D ``DeviceMesh``; each rank then
            orthogonalizes its share of the matrices (docs/distributed.md). FSDP2 needs none.
        nonfinite: what a step does when a gradient holds NaN or Inf: ``"skip"`` (default: nothing
            changes, decided on the device; ``opt.skipped_steps`` counts), ``"raise"``
            (``FloatingPointError``; syncs) or ``"propagate"`` (torch.optim's behaviour).

    References:
        Cheng, Zang, Li, Ma, Cui, Zhang, Chen, Jian, Tong, "TrasMuon: Trust-Region Adaptive Scaling for
        Orthogonalized Momentum Optimizers", arXiv 2602.13498.
        Authors' code: PyPI ``trasmuon-pytorch`` 0.1.0 (v2.1), https://github.com/zangjiucheng/TrasMuon.
    """

    name = "trasmuon"
    chain = with_error_feedback(
        (S.decay_weights, S.nesterov, S.orthogonalize, calibrate_rms, gate_columns), before=S.orthogonalize
    )

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.95,
        beta2: float = 0.95,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        scale_factor: float = 0.2,
        col_gate_enabled: bool = True,
        col_gate_use: str = "m",
        energy_quantile: float = 0.5,
        col_gate_alpha: float = 1.0,
        col_gate_cmin: float = 0.7,
        energy_k: float = 3.0,
        use_energy_trigger: bool = True,
        gate_ema: float = 0.9,
        col_gate_every: int = 4,
        col_gate_min_in: int = 8,
        e_ref_ema_beta: float = 0.99,
        warmup_steps: int = 0,
        sf_enabled: bool = True,
        sf_mix: float = 0.3,
        sf_exclude_warmup: bool = True,
        ns_steps: int = 5,
        orthogonalizer: Any = "auto_you",
        ns_dtype: str | torch.dtype = "auto",
        ns_eps: float = 1e-8,
        batch_3d: bool = False,
        error_feedback: bool = False,
        adamw_lr: float = 1e-3,
        adamw_betas: tuple[float, float] = (0.95, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
        process_group: Any = None,
        nonfinite: str = "skip",
    ):
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=False, beta2=beta2, eps=eps, weight_decay=weight_decay,
            scale_factor=scale_factor, col_gate_enabled=col_gate_enabled, col_gate_use=col_gate_use,
            energy_quantile=energy_quantile, col_gate_alpha=col_gate_alpha, col_gate_cmin=col_gate_cmin,
            energy_k=energy_k, use_energy_trigger=use_energy_trigger, gate_ema=gate_ema,
            col_gate_every=col_gate_every, col_gate_min_in=col_gate_min_in, e_ref_ema_beta=e_ref_ema_beta,
            warmup_steps=warmup_steps, sf_enabled=sf_enabled, sf_mix=sf_mix, sf_exclude_warmup=sf_exclude_warmup,
            ns_steps=ns_steps, orthogonalizer=orthogonalizer, ns_dtype=ns_dtype, ns_eps=ns_eps, batch_3d=batch_3d,
            error_feedback=error_feedback,
        )
        super().__init__(
            params, defaults, adamw_defaults(adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay), process_group,
            nonfinite,
        )

    def validate_orthogonal(self, group: dict[str, Any]) -> None:
        super().validate_orthogonal(group)
        V.unit_interval("beta2", group["beta2"])
        V.positive_or_zero("eps", group["eps"])
        V.positive_or_zero("ns_eps", group["ns_eps"])
        V.positive("scale_factor", group["scale_factor"])
        V.one_of("col_gate_use", group["col_gate_use"], ENERGY_SOURCES)
        V.positive("energy_quantile", group["energy_quantile"])
        V.unit_interval("energy_quantile", group["energy_quantile"], closed_right=True)
        V.positive_or_zero("col_gate_alpha", group["col_gate_alpha"])
        V.positive("col_gate_cmin", group["col_gate_cmin"])
        V.unit_interval("col_gate_cmin", group["col_gate_cmin"], closed_right=True)
        V.positive_or_zero("energy_k", group["energy_k"])
        V.unit_interval("gate_ema", group["gate_ema"])
        V.unit_interval("e_ref_ema_beta", group["e_ref_ema_beta"])
        V.unit_interval("sf_mix", group["sf_mix"], closed_right=True)
        V.positive_int("col_gate_every", group["col_gate_every"])
        V.positive_int("col_gate_min_in", group["col_gate_min_in"])
        V.integer("warmup_steps", group["warmup_steps"], 0)
        V.decoupled_decay(group)
        V.boolean("error_feedback", group.get("error_feedback", False))
        for key in ("col_gate_enabled", "use_energy_trigger", "sf_enabled", "sf_exclude_warmup"):
            V.boolean(key, group[key])
        if group["orthogonalizer"] in ("you", "auto_you") and group["ns_steps"] > len(orth.YOU):
            # The authors' code silently caps at the 5 entries of the schedule; ask for what runs.
            raise ValueError(f"ns_steps={group['ns_steps']!r}: You's schedule has {len(orth.YOU)} steps; expected <= 5")


register(
    "trasmuon", TrasMuon,
    {"lr": 0.05, "adamw_lr": 1e-2},
    {"lr": 0.05, "use_energy_trigger": False, "col_gate_cmin": 0.1, "sf_enabled": False, "col_gate_use": "g",
     "adamw_lr": 1e-2, "weight_decay": 0.01, "adamw_weight_decay": 0.01},
    {"lr": 0.05, "warmup_steps": 2, "col_gate_every": 1, "col_gate_use": "b", "sf_exclude_warmup": False,
     "ns_dtype": "float32", "batch_3d": True, "adamw_lr": 1e-2},
)
