"""AdaMuon preset: sign-stabilised orthogonal update with an element-wise second moment."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .. import stages as S
from ..stages.error_feedback import with_error_feedback
from ..stages.adamuon import normalize_elements, sign_before_orth
from . import validate as V
from .presets import adamw_defaults
from .registry import register
from .shell import ChainOptimizer


class AdaMuon(ChainOptimizer):
    r"""AdaMuon: Muon with an Adam-like element-wise second moment on the orthogonalized update.

    .. code-block:: text

        for each hidden matrix W (m x n view, conv weights as (out, rest)) with gradient G:
            M  <- b M + (1 - b) G
            U  <- (1 - b) G + b M   if nesterov else M
            O  <- NS5(sign(U))          if sign_before_orth (v2/v3, official code) else NS5(U) (v1)
            V  <- b V + (1 - b) O * O   # same b as the momentum, no bias correction
            O^ <- O / (sqrt(V) + eps)
            W  <- W (1 - lr wd) - lr * 0.2 sqrt(mn) / (||O^||_F + eps) * O^      # update RMS 0.2
        every other parameter (embeddings, head, 1-D): AdamW with adamw_lr, adamw_betas, ...
        error_feedback=True (off by default; a reconstruction, see muonlab.stages.error_feedback):
            P <- E + lr U ;  O <- NS5(sign(P)) ;  V, O^ as above from O ;  E <- P - (<P, O^> / ||O^||_F^2) O^
            W <- W (1 - lr wd) - (P - E)                     # the element-wise shape survives, RMS 0.2 cancels

    The update has RMS 0.2 (AdamW's typical RMS), so AdamW's lr and weight decay carry over; the
    official GPT-2 recipe uses one lr (6e-4 peak) and wd 0.1 for AdaMuon and its AdamW part alike,
    which are the defaults here.

    Args:
        params: ``muonlab.param_groups(model)`` (recommended) or a plain iterable of tensors.
        lr: learning rate (6e-4, official GPT-2 config; the official class default is 0.02).
        momentum: ``b``, shared by M and V (0.95, official code).
        eps: added to ``sqrt(V)`` and to the Frobenius norm (1e-8, official code).
        weight_decay: decoupled decay with the unadjusted lr (0.1, official GPT-2 config; class 0.01).
        sign_before_orth: orthogonalize ``sign(U)`` (True: paper v2/v3 and official code; False: v1).
        nesterov: Nesterov mix (True, official code).
        ns_steps: orthogonalizer iterations (5).
        orthogonalizer: registry name or callable (``"auto"``: Jordan's quintic, as NS or, where cheaper, as
            Gram-NS of the same polynomial; see :class:`~muonlab.Muon`).
        ns_dtype: compute dtype of the iteration (``"auto"``: bf16 where matmuls are native bf16, else
            fp32; fp64 parameters use fp64).
        batch_3d: treat 3-D parameters as batches of matrices.
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: the AdamW part (official GPT-2 config:
            6e-4, (0.9, 0.95), 1e-8 (torch default), 0.1).
        error_feedback: keep the residual of each step and feed it into the next (False; our
            reconstruction of Parshakova et al.'s fix, docs/optimizers/error_feedback.md).
        process_group: DDP only: a ``ProcessGroup`` or 1-D ``DeviceMesh``; each rank then
            orthogonalizes its share of the matrices (docs/distributed.md). FSDP2 needs none.
        nonfinite: what a step does when a gradient holds NaN or Inf: ``"skip"`` (default: nothing
            changes, decided on the device; ``opt.skipped_steps`` counts), ``"raise"``
            (``FloatingPointError``; syncs) or ``"propagate"`` (torch.optim's behaviour).

    References:
        Si, Zhang, Shen, "AdaMuon: Adaptive Muon Optimizer", arXiv 2507.11005.
        Official code https://github.com/Chongjie-Si/AdaMuon.
    """

    name = "adamuon"
    chain = with_error_feedback(
        (S.nesterov, sign_before_orth, S.orthogonalize, normalize_elements, S.decay_weights), before=sign_before_orth
    )

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 6e-4,
        momentum: float = 0.95,
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        sign_before_orth: bool = True,
        nesterov: bool = True,
        ns_steps: int = 5,
        orthogonalizer: Any = "auto",
        ns_dtype: str | torch.dtype = "auto",
        batch_3d: bool = False,
        error_feedback: bool = False,
        adamw_lr: float = 6e-4,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.1,
        process_group: Any = None,
        nonfinite: str = "skip",
    ):
        defaults = dict(
            lr=lr, momentum=momentum, eps=eps, weight_decay=weight_decay, sign_before_orth=sign_before_orth,
            nesterov=nesterov, ns_steps=ns_steps, orthogonalizer=orthogonalizer, ns_dtype=ns_dtype,
            batch_3d=batch_3d,
            error_feedback=error_feedback,
        )
        super().__init__(
            params, defaults, adamw_defaults(adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay), process_group,
            nonfinite,
        )

    def validate_orthogonal(self, group: dict[str, Any]) -> None:
        super().validate_orthogonal(group)
        V.positive_or_zero("eps", group["eps"])
        V.boolean("sign_before_orth", group["sign_before_orth"])
        V.decoupled_decay(group)
        V.boolean("error_feedback", group.get("error_feedback", False))


register(
    "adamuon", AdaMuon,
    {"lr": 0.05, "adamw_lr": 1e-2},
    {"lr": 0.05, "sign_before_orth": False, "weight_decay": 0.0, "adamw_lr": 1e-2},
    {"lr": 0.05, "nesterov": False, "ns_dtype": "float32", "batch_3d": True, "adamw_lr": 1e-2},
)
