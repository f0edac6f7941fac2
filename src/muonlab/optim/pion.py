"""Pion preset: spectrum-preserving optimization by orthogonal equivalence transformations."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import stages as S
from ..distributed import modes as DM
from ..stages.pion import rotate
from . import validate as V
from .presets import adamw_defaults
from .registry import register
from .shell import ChainOptimizer


class Pion(ChainOptimizer):
    r"""Pion: rotate each hidden matrix by left/right orthogonal factors; its singular values stay put.

    .. code-block:: text

        for each hidden matrix W (m x n view, conv weights as (out, rest)) with gradient g, step t:
            G_in  = W^T g - g^T W   (n x n, skew)        G_out = g W^T - W g^T   (m x m, skew)
            m_s <- b1 m_s + (1 - b1) G_s ;  v_s <- b2 v_s + (1 - b2) G_s^2      (s = in, out; no bias correction)
            A_s  = -m_s / (sqrt(v_s) + eps)                                     (still skew)
            alternating (default): odd t rotates the out side only (A_in = 0), even t the in side only
            alpha = c sqrt(mn) / (||A_out W + W A_in||_F + eps)                  # RMS of the move = lr c
            W <- E2(lr alpha A_out) W E2(lr alpha A_in),   E2(X) = I + X + X^2 / 2
            W <- W (1 - lr wd)                                                  # only if weight_decay > 0
        every other parameter (embeddings, head, 1-D): AdamW with adamw_lr, adamw_betas, ...

    **Spectrum.** ``E2`` of a skew ``X`` is orthogonal up to ``E2^T E2 = I + X^4 / 4``, so a step
    moves the singular values of ``W`` only at fourth order in ``lr alpha ||A||``; nothing pulls
    them back, so they drift by that much per step (not exactly zero). The initial spectrum is
    therefore part of the model: a zero-initialised matrix never moves (every generator is 0), and
    a rank-deficient one stays rank-deficient. Pion has no additive weight decay; ``weight_decay``
    (default 0, not in the paper) shrinks every singular value by the same factor ``1 - lr wd``.

    **Memory and compute.** The state is ``2 (m^2 + n^2)`` fp32 words per matrix (Muon: ``mn``);
    for a ``4d x d`` MLP matrix that is ``34 d^2``, 8.5x Muon's ``4d^2``. A step costs
    ``O(mn (m + n) + m^3 + n^3)`` flops and no orthogonalizer. Not memory-competitive for wide
    rectangular layers or embeddings: route those to AdamW.

    Args:
        params: ``muonlab.param_groups(model)`` (recommended) or a plain iterable of tensors.
        lr: ``eta``, the RMS of each step's move divided by ``c`` (1e-3, a muonlab choice: the paper's
            value was not retrieved).
        betas: ``(b1, b2)`` of the generator moments ((0.9, 0.999), rollfast's defaults).
        eps: added to ``sqrt(v)`` and to the norm in ``alpha`` (1e-8, rollfast).
        rms_scale: ``c``, the RMS constant (1.0, rollfast).
        alternating: rotate one side per step (True, rollfast's default; the paper reports it close
            to the bilateral update) or both sides every step (False).
        weight_decay: decoupled decay with ``lr`` (0; changes the spectrum's scale, not its shape).
        batch_3d: treat 3-D parameters as batches of matrices.
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: the AdamW part (rollfast's fallback:
            Pion's lr, (0.9, 0.999), 1e-8, and the only weight decay there: 1e-3, ..., 0).
        process_group: DDP only; every rank then computes every matrix's (identical) rotation: Pion
            has no orthogonalizer to split. FSDP2-sharded parameters are refused (Pion needs whole
            matrices).
        nonfinite: ``"skip"`` (default) | ``"raise"`` | ``"propagate"``, as for every preset.

    References:
        Shi, Li, Qiu, Wen, Buchholz, Liu, "Pion: A Spectrum-Preserving Optimizer via Orthogonal
        Equivalence Transformation", arXiv 2605.12492; spherelab.ai/pion. Formulas and defaults as in
        the third-party JAX code RhizomeResearch/rollfast ``src/rollfast/optim/pion.py`` (no official
        code found). Unrelated to the Muon variant also called Pion (arXiv 2605.19282).
    """

    name = "pion"
    chain = (rotate, S.decay_weights)
    needs_weights = True
    #: a zero matrix never moves (every generator is 0): test problems start Pion from a random point
    preserves_spectrum = True
    #: E2 is quadratic in lr: the move is not proportional to lr (the scheduler probe checks less)
    lr_proportional = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        rms_scale: float = 1.0,
        alternating: bool = True,
        weight_decay: float = 0.0,
        batch_3d: bool = False,
        adamw_lr: float = 1e-3,
        adamw_betas: tuple[float, float] = (0.9, 0.999),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
        process_group: Any = None,
        nonfinite: str = "skip",
    ):
        pair = tuple(betas) if isinstance(betas, list) and len(betas) == 2 else betas
        defaults = dict(
            lr=lr, betas=pair, eps=eps, rms_scale=rms_scale, alternating=alternating, weight_decay=weight_decay,
            batch_3d=batch_3d,
        )
        super().__init__(
            params, defaults, adamw_defaults(adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay), process_group,
            nonfinite,
        )

    def validate_orthogonal(self, group: dict[str, Any]) -> None:
        """The common checks, Pion's keys, and no FSDP2-sharded parameters."""
        super().validate_orthogonal(group)
        V.betas("betas", group["betas"])
        V.divisor_eps("eps", group["eps"])
        V.positive("rms_scale", group["rms_scale"])
        V.boolean("alternating", group["alternating"])
        V.decoupled_decay(group)
        for p in group.get("params", []):
            if DM.is_dtensor(p[1] if isinstance(p, tuple) else p):
                raise ValueError(
                    "Pion needs whole matrices (W^T g and E2(A) W): DTensor (FSDP2-sharded) parameters are not "
                    "supported in its orthogonal groups; use DDP (process_group=...) or local parameters"
                )


register(
    "pion", Pion,
    {"lr": 0.05},
    {"lr": 0.05, "alternating": False, "betas": (0.8, 0.99), "weight_decay": 0.01, "batch_3d": True},
)
