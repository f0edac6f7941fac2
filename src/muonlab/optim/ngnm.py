"""NGNM preset: the NGN-M step size (needs the loss), alone or in front of an orthogonalized update."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist

from .. import stages as S
from ..distributed import modes as DM
from ..stages.ngn import DIRECTIONS, GAMMA_KEY, ngn_step_size, ngn_update
from . import validate as V
from .presets import adamw_defaults
from .registry import register
from .shell import ChainOptimizer

#: per-direction defaults of the arguments left as None: (lr = c, momentum = beta)
_DIRECTION_DEFAULTS = {"sgd": (0.1, 0.9), "muon": (0.02, 0.95)}


class NGNM(ChainOptimizer):
    r"""NGN-M: heavy-ball momentum with the NGN step size, computed from the loss at every step.

    .. code-block:: text

        at step k, with the loss f_k >= 0 and g = the gradients of every orthogonal-group parameter:
            gamma_k = c / (1 + c ||g||^2 / (2 f_k))          # one scalar per step, gamma_k <= c = lr
          direction="sgd" (the paper, Algorithm 1):
            d <- beta d + (1 - beta) gamma_k G ;  W <- W - d     # = heavy ball, x_{-1} = x_0
          direction="muon" (muonlab extension, NOT in the paper):
            M <- beta M + (1 - beta) G ;  U = (1 - beta) G + beta M
            W <- W - gamma_k s(m, n) Orth(U)                   # Muon with lr replaced by gamma_k
          W <- W (1 - lr wd)                                   # only if weight_decay > 0 (not in the paper)
        every other parameter (embeddings, head, 1-D): AdamW with adamw_lr, adamw_betas, ...

    **The loss is required**: ``opt.step(closure)`` (the closure returns the loss) or
    ``opt.step(loss=loss)`` with the loss already computed for this batch (a tensor; it is read on
    the device, never with ``.item()``). Without one, ``step()`` raises ``TypeError``. NGN assumes
    ``f >= 0`` (a negative loss is clamped to 0, i.e. no step), e.g. a cross-entropy, not a
    log-likelihood with an offset. Under DDP (``process_group=``) the loss is averaged over the
    ranks (one ``all_reduce``) so that every rank takes the same step; FSDP2-sharded parameters are
    refused (the global norm would need a reduction over shards). With ``nonfinite="skip"`` a
    non-finite loss skips the step like a non-finite gradient (not counted in ``skipped_steps``).

    ``||g||^2`` runs over the parameters NGN-M steps (the orthogonal groups). The paper applies
    NGN-M to every parameter; muonlab, as for every preset, routes embeddings, heads and 1-D
    tensors to AdamW, whose steps do not enter ``gamma``.

    Args:
        params: ``muonlab.param_groups(model)`` (recommended) or a plain iterable of tensors.
        lr: ``c``, the largest step size (None: 0.1 for ``"sgd"``, 0.02 for ``"muon"``; muonlab
            choices, the paper sweeps it).
        momentum: ``beta`` (None: 0.9 for ``"sgd"``, likely the paper's but not confirmed; 0.95 for
            ``"muon"``, Muon's).
        direction: ``"sgd"`` (default, NGN-M as published) or ``"muon"`` (the extension above).
        weight_decay: decoupled decay with ``lr`` (0, as in the paper, which has none).
        ns_steps, orthogonalizer, ns_dtype, adjust_lr: ``"muon"`` only: as for :class:`~muonlab.Muon`
            (``adjust_lr`` None: ``"spectral"`` for ``"muon"``, ``"none"`` for ``"sgd"``, where it is unused).
        batch_3d: treat 3-D parameters as batches of matrices.
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: the AdamW part (3e-4, (0.9, 0.95),
            1e-10, 0, as Muon's).
        process_group: DDP: a ``ProcessGroup`` or 1-D ``DeviceMesh`` (see above).
        nonfinite: ``"skip"`` (default) | ``"raise"`` | ``"propagate"``, as for every preset.

    References:
        Islamov, Ajroldi, Orvieto, Lucchi, "Enhancing Optimizer Stability: Momentum Adaptation of the
        NGN Step-size", arXiv 2508.15071 (NeurIPS 2025), Algorithm 1.
        Orvieto & Xiao, "An Adaptive Stochastic Gradient Method with Non-negative Gauss-Newton
        Stepsizes", arXiv 2407.04358.
    """

    name = "ngnm"
    chain = (ngn_update, S.decay_weights)
    needs_loss = True
    #: gamma = c / (1 + c ||g||^2 / (2f)) is not proportional to c = lr (the scheduler probe checks less)
    lr_proportional = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | None = None,
        momentum: float | None = None,
        direction: str = "sgd",
        weight_decay: float = 0.0,
        ns_steps: int = 5,
        orthogonalizer: Any = "auto",
        ns_dtype: str | torch.dtype = "auto",
        adjust_lr: str | None = None,
        batch_3d: bool = False,
        adamw_lr: float = 3e-4,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-10,
        adamw_weight_decay: float = 0.0,
        process_group: Any = None,
        nonfinite: str = "skip",
    ):
        V.one_of("direction", direction, DIRECTIONS)
        d_lr, d_momentum = _DIRECTION_DEFAULTS[direction]
        defaults = dict(
            lr=d_lr if lr is None else lr, momentum=d_momentum if momentum is None else momentum,
            direction=direction, weight_decay=weight_decay, nesterov=True, ns_steps=ns_steps,
            orthogonalizer=orthogonalizer, ns_dtype=ns_dtype,
            # the shape factor only enters direction="muon" (None: Muon's "spectral"; "none" for "sgd")
            adjust_lr=adjust_lr if adjust_lr is not None else ("spectral" if direction == "muon" else "none"),
            batch_3d=batch_3d,
        )
        super().__init__(
            params, defaults, adamw_defaults(adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay), process_group,
            nonfinite,
        )

    def validate_orthogonal(self, group: dict[str, Any]) -> None:
        """The common checks, ``direction``, and no FSDP2-sharded parameters."""
        super().validate_orthogonal(group)
        V.one_of("direction", group["direction"], DIRECTIONS)
        V.decoupled_decay(group)
        for p in group.get("params", []):
            if DM.is_dtensor(p[1] if isinstance(p, tuple) else p):
                raise ValueError(
                    "NGNM needs the global gradient norm of every parameter it steps: DTensor (FSDP2-sharded) "
                    "parameters are not supported; use DDP (process_group=...) or local parameters"
                )

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, loss: Any = None) -> Any:
        """One NGN-M step; needs ``closure`` (returning the loss) or ``loss=`` (this batch's loss)."""
        if closure is not None:
            if loss is not None:
                raise ValueError("step(): pass closure or loss, not both")
            with torch.enable_grad():
                loss = closure()
        if loss is None:
            raise TypeError(
                f"{type(self).__name__}.step() needs the loss: call step(closure) with a closure that returns it, "
                "or step(loss=loss) with this batch's loss tensor (NGN's step size is computed from it)"
            )
        groups = [g for g in self.param_groups if g["algorithm"] == "orthogonal"]
        grads = [p.grad for g in groups for p in g["params"] if p.grad is not None]
        if not grads:
            return super().step(loss=loss)
        f = self._loss_on_device(loss, grads[0])
        # ||g||^2 over every stepped parameter (a global scalar), fp32 or wider; inf for huge g is fine
        dtype = torch.float64 if grads[0].dtype == torch.float64 else torch.float32
        norms = torch._foreach_norm([DM.local(g) for g in grads])
        grad_sq = torch.stack([n.to(dtype) for n in norms]).square().sum()
        for group in groups:
            group[GAMMA_KEY] = ngn_step_size(group["lr"], f.to(dtype), grad_sq)
        try:
            return super().step(loss=loss)
        finally:
            for group in groups:
                group.pop(GAMMA_KEY, None)

    def _loss_on_device(self, loss: Any, like: torch.Tensor) -> torch.Tensor:
        """The loss as a 0-D tensor on the gradients' device, averaged over the DDP group if any."""
        if isinstance(loss, torch.Tensor):
            if loss.numel() != 1:
                raise ValueError(f"loss must be a scalar (one element), got shape {tuple(loss.shape)}")
            f = loss.detach().reshape(()).to(like.device, torch.promote_types(loss.dtype, torch.float32))
        elif isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss):
            f = torch.tensor(float(loss), device=like.device)
        else:
            raise TypeError(f"loss must be a tensor or a finite number, got {type(loss).__name__}")
        if self._process_group is not None:  # DDP: each rank's batch loss -> the mean, as the gradients are
            f = f.clone()
            dist.all_reduce(f, group=self._process_group)
            f = f / dist.get_world_size(self._process_group)
        return f


register(
    "ngnm", NGNM,
    {"lr": 0.5},
    {"direction": "muon", "lr": 0.05, "weight_decay": 0.01, "ns_dtype": "float32", "batch_3d": True},
)
