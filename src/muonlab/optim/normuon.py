"""NorMuon preset: Muon with neuron-wise (per-row) second-moment normalisation."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .. import stages as S
from ..stages.error_feedback import with_error_feedback
from ..stages.normuon import VARIANTS, normalize_rows
from . import validate as V
from .presets import adamw_defaults
from .registry import register
from .shell import ChainOptimizer

#: per-variant defaults of the arguments left as None: (lr, nesterov, adjust_lr)
_VARIANT_DEFAULTS = {"official": (0.02, True, "spectral"), "paper": (1e-3, False, "none")}


class NorMuon(ChainOptimizer):
    r"""NorMuon: orthogonalized momentum with per-neuron adaptive step sizes.

    .. code-block:: text

        for each hidden matrix W (m x n view, conv weights as (out, rest)) with gradient G:
            M  <- b1 M + (1 - b1) G
            U  <- (1 - b1) G + b1 M   if nesterov else M
            O  <- NS5(U)                                       # Jordan quintic, bf16
            v  <- b2 v + (1 - b2) mean_cols(O * O)             # (m, 1), no bias correction
            O^ <- O / (sqrt(v) + eps)
            official: O^ <- O^ ||O||_F / (||O^||_F + eps);  W <- W (1 - lr wd) - lr sqrt(max(1, m/n)) O^
            paper:    W <- W (1 - lr wd) - lr 0.2 sqrt(mn) / (||O^||_F + eps) O^
        every other parameter (embeddings, head, 1-D): AdamW with adamw_lr, adamw_betas, ...
        error_feedback=True (off by default; a reconstruction, see muonlab.stages.error_feedback):
            P <- E + lr U ;  O <- NS5(P) ;  v, O^ as above from O ;  E <- P - (<P, O^> / ||O^||_F^2) O^
            W <- W (1 - lr wd) - (P - E)                     # the rows' shape survives, the scale cancels

    ``variant="official"`` (default) is the authors' code: the Frobenius norm of the NS output is
    kept and Jordan's shape factor applied, so lr is in Muon units (0.02) and Nesterov is on.
    ``variant="paper"`` is the paper's algorithm: the update is rescaled to RMS 0.2 (AdamW-scale lr,
    default 1e-3) and the momentum is plain EMA (no Nesterov). ``lr``, ``nesterov`` and ``adjust_lr``
    left as None take the variant's value; set them to mix the two.

    Args:
        params: ``muonlab.param_groups(model)`` (recommended) or a plain iterable of tensors.
        lr: learning rate (None: 0.02 official, 1e-3 paper).
        momentum: ``b1`` (0.95, official code).
        beta2: ``b2`` of the row second moment (0.95, official code).
        eps: added to ``sqrt(v)`` and to the Frobenius norm (1e-10, official code).
        weight_decay: decoupled decay with the unadjusted lr (0, official code).
        variant: ``"official"`` | ``"paper"`` (see above).
        nesterov: Nesterov mix (None: True official, False paper).
        ns_steps: orthogonalizer iterations (5).
        orthogonalizer: registry name or callable (``"auto"``: Jordan's quintic, as NS or, where cheaper, as
            Gram-NS of the same polynomial; see :class:`~muonlab.Muon`).
        ns_dtype: compute dtype of the iteration (``"auto"``: bf16 where matmuls are native bf16, else
            fp32; fp64 parameters use fp64).
        adjust_lr: shape factor (None: ``"spectral"`` official, ``"none"`` paper).
        batch_3d: treat 3-D parameters as batches of matrices.
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: the AdamW part (official
            ``NorMuonWithAuxAdam`` defaults: 3e-4, (0.9, 0.95), 1e-10, 0).
        error_feedback: keep the residual of each step and feed it into the next (False; our
            reconstruction of Parshakova et al.'s fix, docs/optimizers/error_feedback.md).
        process_group: DDP only: a ``ProcessGroup`` or 1-D ``DeviceMesh``; each rank then
            orthogonalizes its share of the matrices (docs/distributed.md). FSDP2 needs none.
        nonfinite: what a step does when a gradient holds NaN or Inf: ``"skip"`` (default: nothing
            changes, decided on the device; ``opt.skipped_steps`` counts), ``"raise"``
            (``FloatingPointError``; syncs) or ``"propagate"`` (torch.optim's behaviour).

    References:
        Li, Liu, Liang, Chen, Zhao, "NorMuon: Making Muon more efficient and scalable",
        arXiv 2510.05491 (ICLR 2026). Official code https://github.com/zichongli5/NorMuon.
    """

    name = "normuon"
    chain = with_error_feedback(
        (S.nesterov, S.orthogonalize, normalize_rows, S.scale_by_shape, S.decay_weights), before=S.orthogonalize
    )

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | None = None,
        momentum: float = 0.95,
        beta2: float = 0.95,
        eps: float = 1e-10,
        weight_decay: float = 0.0,
        variant: str = "official",
        nesterov: bool | None = None,
        ns_steps: int = 5,
        orthogonalizer: Any = "auto",
        ns_dtype: str | torch.dtype = "auto",
        adjust_lr: str | None = None,
        batch_3d: bool = False,
        error_feedback: bool = False,
        adamw_lr: float = 3e-4,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-10,
        adamw_weight_decay: float = 0.0,
        process_group: Any = None,
        nonfinite: str = "skip",
    ):
        V.one_of("variant", variant, VARIANTS)
        v_lr, v_nesterov, v_adjust = _VARIANT_DEFAULTS[variant]
        defaults = dict(
            lr=v_lr if lr is None else lr, momentum=momentum, beta2=beta2, eps=eps, weight_decay=weight_decay,
            variant=variant, nesterov=v_nesterov if nesterov is None else nesterov, ns_steps=ns_steps,
            orthogonalizer=orthogonalizer, ns_dtype=ns_dtype, adjust_lr=v_adjust if adjust_lr is None else adjust_lr,
            batch_3d=batch_3d,
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
        V.one_of("variant", group["variant"], VARIANTS)
        V.decoupled_decay(group)
        V.boolean("error_feedback", group.get("error_feedback", False))


register(
    "normuon", NorMuon,
    {"lr": 0.02},
    {"variant": "paper", "lr": 0.05, "weight_decay": 0.1, "adamw_lr": 1e-2},
    {"lr": 0.02, "nesterov": False, "orthogonalizer": "polar_express", "ns_dtype": "float32", "batch_3d": True},
)
