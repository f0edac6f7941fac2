"""SF-NorMuon: NorMuon's step taken by the fast iterate of a schedule-free average."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from .. import stages as S
from ..distributed import modes as DM
from ..stages.normuon import normalize_rows
from ..stages.schedule_free import Z_KEY, schedule_free, to_average, to_interpolation
from . import validate as V
from .presets import adamw_defaults
from .registry import register
from .shell import ChainOptimizer, _compute_dtype


class SFNorMuon(ChainOptimizer):
    r"""SF-NorMuon: schedule-free spectral optimizer (NorMuon at the fast iterate, averaged weights).

    .. code-block:: text

        the parameters hold y (train mode); the state holds z (fast iterate) and x = (y - (1-beta) z) / beta
        for each hidden matrix (m x n view, conv weights as (out, rest)) with gradient G = grad L(y):
            M   <- mu M + (1 - mu) G                      # inner momentum (plain EMA; nesterov=False)
            P   <- NS5(M)
            v   <- b2 v + (1 - b2) mean_cols(P * P)       # (m, 1): NorMuon's neuron-wise second moment
            P^  <- P / (sqrt(v) + eps) ;  P^ <- 0.2 sqrt(mn) P^ / ||P^||_F         # RMS 0.2 (no eps)
            lr_t = lr min(1, t / warmup_steps)
            z   <- (1 - lr wd) z - lr_t P^                # weight decay at the FAST iterate
            s   <- s + lr_t^2 ;  c = lr_t^2 / s
            x   <- (1 - c) x + c z ;  y <- (1 - beta) z + beta x
        every other parameter (embeddings, head, 1-D): the same averaging around an AdamW step
            (adamw_lr, adamw_betas, ...; its weight decay at z too)

    Modes (as every schedule-free optimizer): call ``optimizer.train()`` before training steps and
    ``optimizer.eval()`` before evaluating or saving the model for inference. In train mode the
    model's parameters hold the interpolation point ``y`` (where gradients are taken); ``eval()``
    overwrites them with the average ``x``, which is the model to evaluate, and ``train()`` puts
    ``y`` back. A new optimizer is in train mode; ``step()`` in eval mode raises ``RuntimeError``.
    The mode is saved in ``state_dict()`` and restored by ``load_state_dict()``: save the model and
    the optimizer together, in either mode, and a resumed run continues bitwise as the original.
    No lr schedule is needed (a constant lr, optionally ``warmup_steps``); a scheduler still works
    and then also sets the averaging weights ``lr_t^2``.

    Args:
        params: ``muonlab.param_groups(model)`` (recommended) or a plain iterable of tensors.
        lr: learning rate, AdamW scale (the update has RMS 0.2 before lr; default 1e-3).
        momentum: ``mu``, NorMuon's inner EMA (0.95).
        sf_momentum: ``beta``, weight of the average ``x`` in the gradient point ``y`` (0.9,
            Defazio et al.'s default); must be in (0, 1).
        beta2: ``b2`` of the row second moment (0.95, NorMuon).
        eps: added to ``sqrt(v)`` (1e-8).
        weight_decay: decoupled decay of the fast iterate with the base lr (0.1; a library choice,
            the paper reports decay at z as essential but its value was not retrieved).
        warmup_steps: linear warmup of the step and of the averaging weights (0: none).
        nesterov: Nesterov mix in the inner momentum (False, as in the published formulas).
        ns_steps, orthogonalizer, ns_dtype, batch_3d: as in :class:`~muonlab.NorMuon`.
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: the AdamW part, schedule-free too
            (3e-4, (0.9, 0.95), 1e-10, 0: NorMuon's auxiliary Adam).
        process_group, nonfinite: as in :class:`~muonlab.NorMuon`.

    References:
        Apte, Deshpande, Kumar, Chakrabarti, Kim, "Anytime Training with Schedule-Free Spectral
        Optimization", arXiv 2605.23061 (2026). Defazio et al., "The Road Less Scheduled", arXiv
        2405.15682, code https://github.com/facebookresearch/schedule_free. Li et al., "NorMuon",
        arXiv 2510.05491.
    """

    name = "sfnormuon"
    chain = (S.nesterov, S.orthogonalize, normalize_rows, S.decay_weights, schedule_free)
    adamw_chain = (S.decay_weights, S.adam, schedule_free)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.95,
        sf_momentum: float = 0.9,
        beta2: float = 0.95,
        eps: float = 1e-8,
        weight_decay: float = 0.1,
        warmup_steps: int = 0,
        nesterov: bool = False,
        ns_steps: int = 5,
        orthogonalizer: Any = "auto",
        ns_dtype: str | torch.dtype = "auto",
        batch_3d: bool = False,
        adamw_lr: float = 3e-4,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-10,
        adamw_weight_decay: float = 0.0,
        process_group: Any = None,
        nonfinite: str = "skip",
    ):
        self._train_mode = True
        sf = dict(sf_momentum=sf_momentum, warmup_steps=warmup_steps)
        defaults = dict(
            lr=lr, momentum=momentum, beta2=beta2, eps=eps, weight_decay=weight_decay, variant="paper",
            nesterov=nesterov, ns_steps=ns_steps, orthogonalizer=orthogonalizer, ns_dtype=ns_dtype,
            batch_3d=batch_3d, **sf,
        )
        aux = dict(adamw_defaults(adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay), **sf)
        super().__init__(params, defaults, aux, process_group, nonfinite)

    # ------------------------------------------------------------------ checks
    def validate_group(self, group: dict[str, Any]) -> None:
        super().validate_group(group)
        # beta = 0 would make x unrecoverable from (y, z) (y = z); beta = 1 leaves z out of y.
        V.unit_interval("sf_momentum", group["sf_momentum"])
        V.positive("sf_momentum", group["sf_momentum"])
        V.integer("warmup_steps", group["warmup_steps"])

    def validate_orthogonal(self, group: dict[str, Any]) -> None:
        super().validate_orthogonal(group)
        V.unit_interval("beta2", group["beta2"])
        V.positive_or_zero("eps", group["eps"])
        V.one_of("variant", group["variant"], ("paper",))
        V.decoupled_decay(group)

    # ------------------------------------------------------------------ modes
    @property
    def train_mode(self) -> bool:
        """True when the parameters hold ``y`` (training), False when they hold ``x`` (evaluation)."""
        return self._train_mode

    @torch.no_grad()
    def train(self) -> None:
        """Switch the parameters to the interpolation point ``y`` (no-op in train mode)."""
        if not self._train_mode:
            self._swap(to_interpolation)
            self._train_mode = True

    @torch.no_grad()
    def eval(self) -> None:
        """Switch the parameters to the average ``x`` (no-op in eval mode)."""
        if self._train_mode:
            self._swap(to_average)
            self._train_mode = False

    def _swap(self, fn: Callable[[Tensor, Tensor, float], Tensor]) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                z = self.state[p].get(Z_KEY)
                if z is None:  # never stepped: x = y = z = p
                    continue
                W, shape, count = self._matrices(p, group)
                new = fn(W.to(z.dtype), DM.local(z).reshape(count, *shape), group["sf_momentum"])
                self._store(p, group, new)

    def _matrices(self, p: Tensor, group: dict[str, Any]) -> tuple[Tensor, tuple[int, ...], int]:
        shape, count, _ = self.matrix_view(DM.local(p), group)
        return self.as_matrices(DM.local(p), group, count, shape), shape, count

    def _store(self, p: Tensor, group: dict[str, Any], new: Tensor) -> None:
        local = DM.local(p)
        if group["algorithm"] != "adamw" and group.get("layout", "out_in") == "in_out":
            local.copy_(new[0].t())
        else:
            local.copy_(new.reshape(local.shape))

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step at ``y``; ``closure`` re-evaluates the loss. Raises ``RuntimeError`` in eval mode."""
        if not self._train_mode:
            raise RuntimeError("SFNorMuon.step() in eval mode: the parameters hold the average x; call "
                               "optimizer.train() first")
        loss = None
        if closure is not None:  # gradients first: z is created for the parameters that have one
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            local_mode = DM.resolve(group, self._process_group) == "local"
            for p in group["params"]:
                if Z_KEY in self.state[p] or (p.grad is None and local_mode):
                    continue
                W, _, _ = self._matrices(p, group)
                squeeze = self.matrix_view(p, group)[2]
                z = W.to(dtype=_compute_dtype(p), copy=True)  # z_0 = y_0 = x_0 = the weights
                self.state[p][Z_KEY] = z[0] if squeeze else z
        super().step()
        return loss

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The shell's state dict; ``["muonlab"]["train_mode"]`` records the mode."""
        sd = super().state_dict()
        sd["muonlab"]["train_mode"] = self._train_mode
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the state and the mode; the model's parameters must be the ones saved with it."""
        mode = state_dict.get("muonlab", {}).get("train_mode", True)
        super().load_state_dict(state_dict)
        self._train_mode = bool(mode)

    def __getstate__(self) -> dict[str, Any]:
        return dict(super().__getstate__(), _train_mode=self._train_mode)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_train_mode", True)


register(
    "sfnormuon", SFNorMuon,
    {"lr": 0.05},
    {"lr": 0.05, "sf_momentum": 0.5, "weight_decay": 0.1, "adamw_lr": 1e-2},
    {"lr": 0.05, "nesterov": True, "orthogonalizer": "polar_express", "ns_dtype": "float32", "batch_3d": True,
     "adamw_betas": (0.95, 0.95)},
)
