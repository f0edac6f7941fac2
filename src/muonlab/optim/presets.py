"""Public optimizer classes: short presets over the chain shell.

Each preset fixes the chain of stages for its orthogonal groups and the defaults of both group
kinds; everything else (bucketing, state, validation plumbing, the AdamW part) is the shell's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .. import stages as S
from ..stages.error_feedback import with_error_feedback
from . import validate as V
from .registry import register
from .shell import ChainOptimizer


def adamw_defaults(lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> dict[str, Any]:
    """Hyperparameters of the AdamW groups of a preset."""
    # Only a pair given as a list becomes a tuple: anything else reaches the validator as given, so
    # its error shows it.
    pair = tuple(betas) if isinstance(betas, list) and len(betas) == 2 else betas
    return {"lr": lr, "betas": pair, "eps": eps, "weight_decay": weight_decay}


class Muon(ChainOptimizer):
    r"""Muon: momentum, orthogonalized by Newton–Schulz, scaled by shape.

    .. code-block:: text

        for each hidden matrix W (m x n view) with gradient G:
            M  <- mu M + (1 - mu) G                       # EMA momentum (momentum_form="ema")
            U  <- (1 - mu) G + mu M   if nesterov else M
            O  <- Orth(U)                                 # ns_steps of the orthogonalizer, in ns_dtype
            W  <- W (1 - lr wd)                           # decoupled decay, unadjusted lr
            W  <- W - lr * s(m, n) * O
        s = sqrt(max(1, m/n))    adjust_lr="spectral" (Keller Jordan; lr ~ 0.02)
          = 0.2 sqrt(max(m, n))  adjust_lr="rms"      (Moonlight; reuse AdamW's lr ~ 1e-3 and wd)
          = 1                    adjust_lr="none"
        every other parameter (embeddings, head, 1-D): AdamW with adamw_lr, adamw_betas, ...
        error_feedback=True (off by default; a reconstruction, see muonlab.stages.error_feedback):
            P <- E + lr U ;  O <- Orth(P) ;  D <- (<P, O> / ||O||_F^2) O ;  E <- P - D
            W <- W (1 - lr wd) - D                        # s(m, n) unused; lr in SGD units

    Args:
        params: ``muonlab.param_groups(model)`` (recommended) or a plain iterable of tensors.
        lr: learning rate of the orthogonal groups (default 0.02, Jordan's spectral units).
        momentum: ``mu`` (0.95).
        nesterov: Nesterov mix (True).
        weight_decay: decoupled decay (0, as in Jordan's class; his README uses 0.01).
        ns_steps: orthogonalizer iterations (5).
        orthogonalizer: registry name or a callable ``X -> Orth(X)``. ``"auto"`` (default): Jordan's
            quintic, the polynomial of the authors' code and ``torch.optim.Muon``, computed per shape as
            Newton–Schulz or, for rectangular matrices in fp32/fp64, as Gram–Newton–Schulz (same polynomial,
            fewer FLOPs; ``describe()`` shows the pick). ``"newton_schulz"`` is the plain form;
            ``"polar_express"``, ``"auto_you"``, ``"svd"``, ... change the polynomial (docs/orthogonalizers.md).
        ns_dtype: compute dtype of the iteration: ``"auto"`` (bf16 on GPUs and on CPUs with native bf16
            matmuls (AVX512-BF16 / AMX), else fp32), or
            ``"bfloat16"``, ``"float32"``, ... (fp64 parameters always use fp64).
        adjust_lr: ``"spectral"`` | ``"rms"`` | ``"none"`` (see above).
        momentum_form: ``"ema"`` or ``"sum"`` (identical after orthogonalization).
        batch_3d: treat 3-D parameters as batches of matrices.
        error_feedback: keep the residual of each step and feed it into the next (Parshakova et
            al.'s fix for convex Lipschitz objectives; docs/optimizers/error_feedback.md). False.
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: the AdamW part (Jordan's
            ``MuonWithAuxAdam`` defaults: 3e-4, (0.9, 0.95), 1e-10, 0).
        process_group: DDP only: a ``ProcessGroup`` or 1-D ``DeviceMesh``; each rank then
            orthogonalizes its share of the matrices (docs/distributed.md). FSDP2 needs none.
        nonfinite: what a step does when a gradient holds NaN or Inf: ``"skip"`` (default: nothing
            changes, decided on the device; ``opt.skipped_steps`` counts), ``"raise"``
            (``FloatingPointError``; syncs) or ``"propagate"`` (torch.optim's behaviour).

    References:
        Keller Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024),
        https://kellerjordan.github.io/posts/muon/, code https://github.com/KellerJordan/Muon.
        Liu et al., "Muon is Scalable for LLM Training", arXiv 2502.16982 (the "rms" convention).
        ``torch.optim.Muon`` (PyTorch >= 2.9).
        Parshakova et al., "Muon Does Not Converge on Convex Lipschitz Functions", arXiv 2605.08980
        (``error_feedback``).
    """

    name = "muon"
    chain = with_error_feedback(
        (S.nesterov, S.orthogonalize, S.scale_by_shape, S.decay_weights), before=S.orthogonalize
    )

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        orthogonalizer: Any = "auto",
        ns_dtype: str | torch.dtype = "auto",
        adjust_lr: str = "spectral",
        momentum_form: str = "ema",
        batch_3d: bool = False,
        error_feedback: bool = False,
        adamw_lr: float = 3e-4,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-10,
        adamw_weight_decay: float = 0.0,
        process_group: Any = None,
        nonfinite: str = "skip",
    ):
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, ns_steps=ns_steps,
            orthogonalizer=orthogonalizer, ns_dtype=ns_dtype, adjust_lr=adjust_lr,
            momentum_form=momentum_form, batch_3d=batch_3d, error_feedback=error_feedback,
        )
        super().__init__(
            params, defaults, adamw_defaults(adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay), process_group,
            nonfinite,
        )

    def validate_orthogonal(self, group: dict[str, Any]) -> None:
        """The common checks, and a decay factor ``1 - lr * weight_decay`` in ``[0, 1]``."""
        super().validate_orthogonal(group)
        V.decoupled_decay(group)
        V.boolean("error_feedback", group.get("error_feedback", False))


class AdamW(ChainOptimizer):
    r"""AdamW in the muonlab shell: every group uses AdamW (``torch.optim.AdamW`` semantics).

    .. code-block:: text

        W <- W (1 - lr wd)
        m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
        W <- W - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    Useful as the baseline in benchmarks (same shell, same state layout, same schedulers).
    ``process_group`` is accepted for symmetry with the other presets (AdamW has no
    orthogonalization to split, so it communicates nothing); ``nonfinite`` as in
    :class:`~muonlab.ChainOptimizer` (default ``"skip"``).

    References:
        Loshchilov & Hutter, "Decoupled Weight Decay Regularization", arXiv 1711.05101.
    """

    name = "adamw"
    default_algorithm = "adamw"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        process_group: Any = None,
        nonfinite: str = "skip",
    ):
        ad = adamw_defaults(lr, betas, eps, weight_decay)
        super().__init__(params, ad, ad, process_group, nonfinite)


register("adamw", AdamW, {"lr": 1e-2}, {"lr": 1e-2, "weight_decay": 0.1, "betas": (0.8, 0.95)})
register(
    "muon", Muon,
    {"lr": 0.02},
    {"lr": 0.2, "nesterov": False, "momentum_form": "sum", "weight_decay": 0.01, "adjust_lr": "rms", "ns_dtype": "float32"},
    {"lr": 0.02, "orthogonalizer": "polar_express", "ns_steps": 6, "batch_3d": True, "adjust_lr": "none"},
)
