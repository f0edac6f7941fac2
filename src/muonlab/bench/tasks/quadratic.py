"""``quadratic``: the Section-5 structured matrix quadratic as a deterministic benchmark task.

The "model" holds one matrix parameter ``weight`` of shape ``(d1, d2)`` starting at ``W = 0``
(the paper's ``Y_0 = 0``); the loss is ``StructuredQuadratic.loss`` (exactly 0 at the optimum),
so ``val_loss`` is the suboptimality. There is no data: every batch is ``None`` and the gradient is
exact, so the run is deterministic and ``seed`` only matters through the optimizer.

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv:2606.04662 §5;
    ``muonlab.data.quadratic``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Iterator

import torch
from torch import nn

from ...data.quadratic import StructuredQuadratic
from ._common import check_finite, check_positive_int


class QuadraticModel(nn.Module):
    """Holds the matrix parameter ``weight``, declared a hidden matrix (orthogonalized).

    A bare ``nn.Parameter`` matrix is routed to AdamW by default (it looks like a positional table);
    ``muonlab_roles`` tells ``muonlab.param_groups`` what it is.
    """

    muonlab_roles = {"weight": "hidden"}

    def __init__(self, d1: int, d2: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(d1, d2))

    def forward(self) -> torch.Tensor:
        """The matrix itself: the loss calls the model, so a ``DistributedDataParallel`` wrapper works."""
        return self.weight


@dataclass
class QuadraticTask:
    """Minimize ``StructuredQuadratic(d1, d2, alpha=, rho=, sigma_ratio=, r=, seed=problem_seed)``.

    Attributes:
        d1, d2, alpha, rho, sigma_ratio, r, problem_seed: the problem (see ``StructuredQuadratic``).
        target, steps: suboptimality threshold and default budget.
    """

    name: ClassVar[str] = "quadratic"
    d1: int = 32
    d2: int = 32
    alpha: float = 0.1
    rho: float = 100.0
    sigma_ratio: float = 3.0
    r: int = 4
    problem_seed: int = 0
    # L(0) = 14.6; AdamW (betas (0.9, 0.95), wd 0, warmup + cosine) reaches 1e-3 at ~100 steps
    # (lr 1e-2) to ~150 steps (lr 3e-2, 1e-1); lr 3e-3 and below miss it within 200 steps.
    target: float = 1e-3
    steps: int = 200

    def __post_init__(self) -> None:
        check_positive_int(d1=self.d1, d2=self.d2, r=self.r, steps=self.steps)
        check_finite(positive=True, target=self.target)
        _ = self.problem  # build now so invalid alpha/rho/sigma_ratio fail at construction

    @cached_property
    def problem(self) -> StructuredQuadratic:
        """The fp32 quadratic (fp64 studies can build ``StructuredQuadratic`` directly)."""
        return StructuredQuadratic(
            self.d1, self.d2, alpha=self.alpha, rho=self.rho, sigma_ratio=self.sigma_ratio, r=self.r,
            seed=self.problem_seed, dtype=torch.float32,
        )

    def make_model(self, seed: int) -> nn.Module:
        """``W = 0`` for every seed (the paper's start point)."""
        return QuadraticModel(self.d1, self.d2)

    def train_batches(self, seed: int) -> Iterator[None]:
        """Endless ``None`` batches (the loss is deterministic)."""
        return itertools.repeat(None)

    def loss(self, model: nn.Module, batch: None = None) -> torch.Tensor:
        """Suboptimality ``L(W) - L(W*)``."""
        return self.problem.loss(model())

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``val_loss`` = the (deterministic) loss."""
        return {"val_loss": float(self.loss(model))}
