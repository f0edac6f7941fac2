"""NAMO and NAMO-D presets ("Adam Improves Muon", arXiv 2602.17080).

The stepsize maths lives in :mod:`muonlab.stages.namo`; this module fixes the chains, the defaults
(those of the official code, minxin-zhg/namo ``src/namo.py``) and the validation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .. import stages as S
from ..stages.error_feedback import with_error_feedback
from ..stages.namo import CONV_SHAPES, DECAYS, VARIANTS, scale_by_namo, scale_by_namo_d
from . import validate as V
from .presets import adamw_defaults
from .registry import register
from .shell import ChainOptimizer


class NAMO(ChainOptimizer):
    r"""NAMO: orthogonalized momentum with an Adam-style norm-ratio stepsize.

    .. code-block:: text

        for each hidden matrix W (A x B) with gradient G, at step t:
            M   <- mu1 M + (1 - mu1) G                      # EMA momentum
            M~  <- mu1 M + (1 - mu1) G  if nesterov else M  # official default: Nesterov
            v   <- mu2 v + (1 - mu2) ||G||_F^2              # one fp64 scalar per matrix
            a   <- lr sqrt(1 - mu2^t) / (1 - mu1^t) * ||M~||_F / (sqrt(v) + eps)
            O   <- Orth(M~)
          variant="official" (minxin-zhg/namo):
            W   <- W (1 - wd min(a, 1))
            W   <- W - min(a kappa sqrt(max(A, B)), 1) O    # A, B = W.shape[:2] (conv_shape)
          variant="paper" (arXiv 2602.17080 §2.3; Nesterov off unless asked for):
            W   <- W - a (O + wd W)
          decay="adamw" (either variant): the decay above becomes W <- W (1 - lr wd)
        every other parameter (embeddings, head, 1-D): AdamW with adamw_lr, adamw_betas, ...
        error_feedback=True (off by default; a reconstruction, see muonlab.stages.error_feedback):
            v, alpha as above (from M~ and G);  P <- E + lr M~ ;  D <- Orth(P)  (NAMO-D: Orth(P) diag(d))
            E <- P - (<P, D> / ||D||_F^2) D ;  W <- W * decay - (P - E)   # alpha's size cancels; decay kept

    Args:
        params: ``muonlab.param_groups(model)`` (recommended) or a plain iterable of tensors.
        lr: base learning rate (official 1e-2; the GPT-2 config uses 0.012).
        momentum: ``mu1`` (0.95).
        mu2: EMA coefficient of the squared gradient norm (0.99).
        eps: added to ``sqrt(v)`` (1e-8, outside the sqrt as in the code since commit 5f8805a).
        weight_decay: ``wd`` (0.1), applied with the adaptive rate (see the box).
        decay: ``"adaptive"`` (default: the variant's form, as the official code and the paper) or
            ``"adamw"`` (``W <- W (1 - lr wd)``, independent of the adaptive step). An independent
            reproduction reports that the official code's adaptive decay and AdamW-style decay give
            different GPT-2 small losses (minxin-zhg/namo issues #1, #3; disputed by the authors).
        nesterov: Nesterov mix; ``None`` picks the variant's form (official True, paper False).
        variant: ``"official"`` (default) or ``"paper"`` (see the box).
        scale_coeff: ``kappa`` of the official shape factor (0.2; ignored by ``"paper"``).
        conv_shape: ``"leading"`` (official: ``A, B = W.shape[:2]``, i.e. out and in channels of a
            conv) or ``"flattened"`` (the ``(out, rest)`` matrix view); only N-D weights differ.
        ns_steps, orthogonalizer, ns_dtype, batch_3d: the orthogonalizer (5 Jordan NS steps, ``"auto"``: as
            NS or Gram-NS per shape, see :class:`~muonlab.Muon`; ns_dtype "auto" =
            bf16 where matmuls are native bf16, else fp32; the official code casts the lr to bf16 too, muonlab keeps it fp32).
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: the AdamW part. The official code
            shares ``lr`` with it; reproduce with ``adamw_lr=lr, adamw_weight_decay=0``.
            Defaults: 6e-4 (Levanter's ``adam_lr``), (0.9, 0.95), 1e-8, 0 (official configs).
        error_feedback: keep the residual of each step and feed it into the next (False; our
            reconstruction of Parshakova et al.'s fix, docs/optimizers/error_feedback.md).
        process_group: DDP only: a ``ProcessGroup`` or 1-D ``DeviceMesh``; each rank then
            orthogonalizes its share of the matrices (docs/distributed.md). FSDP2 needs none.
        nonfinite: what a step does when a gradient holds NaN or Inf: ``"skip"`` (default: nothing
            changes, decided on the device; ``opt.skipped_steps`` counts), ``"raise"``
            (``FloatingPointError``; syncs) or ``"propagate"`` (torch.optim's behaviour).

    References:
        Minxin Zhang et al., "Adam Improves Muon: Adaptive Moment Estimation with Orthogonalized
        Momentum", arXiv 2602.17080; official code https://github.com/minxin-zhg/namo.
        Levanter's JAX port ``levanter/optim/namo.py`` (separate ``adam_lr``).
    """

    name = "namo"
    chain = with_error_feedback((S.nesterov, scale_by_namo, S.orthogonalize), before=S.orthogonalize)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        momentum: float = 0.95,
        mu2: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        nesterov: bool | None = None,
        variant: str = "official",
        decay: str = "adaptive",
        scale_coeff: float = 0.2,
        conv_shape: str = "leading",
        ns_steps: int = 5,
        orthogonalizer: Any = "auto",
        ns_dtype: str | torch.dtype = "auto",
        batch_3d: bool = False,
        error_feedback: bool = False,
        adamw_lr: float = 6e-4,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
        process_group: Any = None,
        nonfinite: str = "skip",
    ):
        V.one_of("variant", variant, VARIANTS)
        if nesterov is None:
            nesterov = variant == "official"
        defaults = dict(
            lr=lr, momentum=momentum, mu2=mu2, eps=eps, weight_decay=weight_decay, nesterov=nesterov,
            variant=variant, decay=decay, scale_coeff=scale_coeff, conv_shape=conv_shape, ns_steps=ns_steps,
            orthogonalizer=orthogonalizer, ns_dtype=ns_dtype, batch_3d=batch_3d,
            error_feedback=error_feedback,
            **getattr(self, "_extra_defaults", {}),  # NAMOD's c
        )
        super().__init__(
            params, defaults, adamw_defaults(adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay), process_group,
            nonfinite,
        )

    def validate_orthogonal(self, group: dict[str, Any]) -> None:
        """NAMO's keys on top of the common ones."""
        super().validate_orthogonal(group)
        V.unit_interval("mu2", group["mu2"])
        V.positive_or_zero("eps", group["eps"])
        V.positive_or_zero("scale_coeff", group["scale_coeff"])
        V.one_of("variant", group["variant"], VARIANTS)
        V.one_of("decay", group["decay"], DECAYS)
        V.one_of("conv_shape", group["conv_shape"], CONV_SHAPES)
        V.boolean("error_feedback", group.get("error_feedback", False))
        if group["variant"] == "paper" or group["decay"] == "adamw":  # 1 - alpha wd (alpha = lr at t = 1) or 1 - lr wd
            V.decoupled_decay(group)
        elif not isinstance(self, NAMOD):  # official decay 1 - wd min(alpha, 1) (NAMO-D floors it at 0)
            V.unit_interval("weight_decay", group["weight_decay"], closed_right=True)
        if group.get("momentum_form", "ema") != "ema":
            raise ValueError(f"momentum_form={group['momentum_form']!r}: NAMO's norm ratio needs 'ema'")


class NAMOD(NAMO):
    r"""NAMO-D: NAMO with one clamped adaptive stepsize per column (input feature).

    .. code-block:: text

        for each hidden matrix W (A x n view) with gradient G, at step t:
            M, M~ as in NAMO;  O <- Orth(M~)
            V_j <- mu2 V_j + (1 - mu2) ||G[:, j]||^2          # fp64 vector of length n
            r_j <- ||M~[:, j]|| / (sqrt(V_j) + eps)
            r_j <- clip(r_j, c mean(r), mean(r) / c)  if 0 < c <= 1   # NaN-aware mean
            d_j <- lr sqrt(1 - mu2^t) / (1 - mu1^t) * r_j
          variant="official" (minxin-zhg/namo):
            W[:, j] <- W[:, j] max(0, 1 - wd min(d_j, 1))
            W[:, j] <- W[:, j] - min(d_j kappa sqrt(max(A, B)), 1) O[:, j]
          variant="paper" (arXiv 2602.17080 §3.3, W <- W - O D; decay is our extension, see docs):
            W <- W - (O + wd W) diag(d)
          decay="adamw" (either variant): the decay above becomes W <- W (1 - lr wd)

    Args:
        c: clamp of the per-column rates around their mean (0.75, the code default; the GPT-2
            config uses 0.01). ``c = 1``: one rate for all columns (update proportional to O);
            ``c`` = 0 or > 1: no clamp.
        others: as :class:`NAMO`.

    References:
        Minxin Zhang et al., "Adam Improves Muon: Adaptive Moment Estimation with Orthogonalized
        Momentum", arXiv 2602.17080; official code https://github.com/minxin-zhg/namo.
    """

    name = "namo-d"
    chain = with_error_feedback((S.nesterov, scale_by_namo_d, S.orthogonalize), before=S.orthogonalize)

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, c: float = 0.75, **kwargs: Any):
        self._extra_defaults = {"c": c}
        super().__init__(params, lr=lr, **kwargs)

    def validate_orthogonal(self, group: dict[str, Any]) -> None:
        """NAMO's checks plus ``c >= 0``."""
        super().validate_orthogonal(group)
        V.positive_or_zero("c", group["c"])


# lr 0.05: the official variant's update has RMS ~0.2 lr (Moonlight units), so 1e-2 barely moves a
# quadratic within the contract suite's 60 steps.
register(
    "namo", NAMO,
    {"lr": 0.05},
    {"variant": "paper", "lr": 0.05, "weight_decay": 0.05, "ns_dtype": "float32"},
    {"lr": 0.05, "decay": "adamw"},
    {"lr": 0.05, "conv_shape": "flattened", "nesterov": False, "mu2": 0.9, "orthogonalizer": "polar_express",
     "batch_3d": True},
)
register(
    "namo-d", NAMOD,
    {"lr": 0.05},
    {"variant": "paper", "lr": 0.05, "c": 0.5, "ns_dtype": "float32"},
    {"lr": 0.05, "decay": "adamw"},
    {"lr": 0.05, "c": 1.0, "nesterov": False, "weight_decay": 0.0, "batch_3d": True},
)
