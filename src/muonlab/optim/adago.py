"""AdaGO preset ("AdaGrad Meets Muon", arXiv 2509.02981).

The stepsize maths lives in :mod:`muonlab.stages.adago`. There is no official code, so there is
one form only (the paper's, §4.2) and no ``variant`` switch; the two extras (decoupled weight
decay and a shape factor) are off by default and leave the paper form untouched when off.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from .. import stages as S
from ..stages.error_feedback import with_error_feedback
from ..stages.adago import scale_by_adago
from . import validate as V
from .presets import adamw_defaults
from .registry import register
from .shell import ChainOptimizer


class AdaGO(ChainOptimizer):
    r"""AdaGO: orthogonalized momentum with an AdaGrad-norm stepsize.

    .. code-block:: text

        for each hidden matrix W with gradient G, at step t (s_0 = v0^2):
            M     <- mu M + (1 - mu) G                      # EMA momentum (Nesterov off)
            s     <- s + min(||G||_F, gamma)^2              # one scalar per matrix
            alpha <- max(eps, eta min(||G||_F, gamma) / sqrt(s))
            W     <- W (1 - eta wd)                         # extra, off by default (wd = 0)
            W     <- W - alpha * s(m, n) * Orth(M)          # s(m, n) = 1 (adjust_lr="none")
        every other parameter (embeddings, head, 1-D): AdamW with adamw_lr, adamw_betas, ...
        error_feedback=True (off by default; a reconstruction, see muonlab.stages.error_feedback):
            P <- E + eta M ;  O <- Orth(P) ;  E <- P - (<P, O> / ||O||_F^2) O ;  W <- W (1 - eta wd) - (P - E)
            # alpha and s(m, n) cancel: the step is EF-Muon's (s is still accumulated)

    No paper values of the hyperparameters could be recovered; the defaults below come from public
    ports (provenance on each) and are not the paper's.

    Args:
        params: ``muonlab.param_groups(model)`` (recommended) or a plain iterable of tensors.
        lr: ``eta``, the first step's spectral norm when ``v0`` is small (0.1, our choice: the
            stepsize decays like ``eta / sqrt(t)``, so it starts above Muon's 0.02).
        momentum: ``mu`` (0.95, optax and pytorch-optimizer).
        gamma: clip of the gradient norm (1.0, optax).
        eps: floor of the stepsize, not a denominator epsilon (5e-4, pytorch-optimizer).
        v0: initial accumulator ``v0`` (state starts at ``v0**2``; 1e-3, i.e. pytorch-optimizer's
            1e-6 initial sum of squares).
        nesterov: Nesterov mix of the orthogonalized momentum (False, as in the paper).
        weight_decay: decoupled ``W <- W (1 - eta wd)`` (0; not in the paper).
        adjust_lr: shape factor after the stepsize, ``"none"`` (paper), ``"spectral"`` or ``"rms"``.
        ns_steps, orthogonalizer, ns_dtype, batch_3d: the orthogonalizer (5 Jordan NS steps, ``"auto"``: as NS
            or Gram-NS per shape, see :class:`~muonlab.Muon`; ns_dtype
            "auto" = bf16 where matmuls are native bf16, else fp32).
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: the AdamW part (3e-4, (0.9, 0.95),
            1e-10, 0: pytorch-optimizer's AdamW groups).
        error_feedback: keep the residual of each step and feed it into the next (False; our
            reconstruction of Parshakova et al.'s fix, docs/optimizers/error_feedback.md).
        process_group: DDP only: a ``ProcessGroup`` or 1-D ``DeviceMesh``; each rank then
            orthogonalizes its share of the matrices (docs/distributed.md). FSDP2 needs none.
        nonfinite: what a step does when a gradient holds NaN or Inf: ``"skip"`` (default: nothing
            changes, decided on the device; ``opt.skipped_steps`` counts), ``"raise"``
            (``FloatingPointError``; syncs) or ``"propagate"`` (torch.optim's behaviour).

    References:
        Minxin Zhang, Yuxuan Liu, Hayden Schaeffer, "AdaGrad Meets Muon: Adaptive Stepsizes for
        Orthogonal Updates", arXiv 2509.02981. Ports consulted for defaults: optax
        ``contrib/_adago.py``; pytorch-optimizer 4.1.0 ``AdaGO`` (differs: no sqrt, see docs).
    """

    name = "adago"
    chain = with_error_feedback(
        (S.nesterov, scale_by_adago, S.orthogonalize, S.scale_by_shape, S.decay_weights), before=S.orthogonalize
    )

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        momentum: float = 0.95,
        gamma: float = 1.0,
        eps: float = 5e-4,
        v0: float = 1e-3,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        adjust_lr: str = "none",
        ns_steps: int = 5,
        orthogonalizer: Any = "auto",
        ns_dtype: str | torch.dtype = "auto",
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
            lr=lr, momentum=momentum, gamma=gamma, eps=eps, v0=v0, nesterov=nesterov, weight_decay=weight_decay,
            adjust_lr=adjust_lr, ns_steps=ns_steps, orthogonalizer=orthogonalizer, ns_dtype=ns_dtype,
            batch_3d=batch_3d,
            error_feedback=error_feedback,
        )
        super().__init__(
            params, defaults, adamw_defaults(adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay), process_group,
            nonfinite,
        )

    def validate_orthogonal(self, group: dict[str, Any]) -> None:
        """AdaGO's keys on top of the common ones."""
        super().validate_orthogonal(group)
        V.positive("gamma", group["gamma"])
        if math.isinf(float(group["gamma"])):
            raise ValueError(f"gamma={group['gamma']!r}: expected a finite clip (use a large value to disable)")
        V.positive_or_zero("eps", group["eps"])
        V.positive_or_zero("v0", group["v0"])
        V.decoupled_decay(group)
        V.boolean("error_feedback", group.get("error_feedback", False))


register(
    "adago", AdaGO,
    {},
    {"lr": 0.1, "gamma": 10.0, "v0": 1.0, "weight_decay": 0.1, "adjust_lr": "spectral", "ns_dtype": "float32"},
    {"nesterov": True, "eps": 0.0, "v0": 0.0, "orthogonalizer": "polar_express", "batch_3d": True},
)
