"""``lipschitz``: the sign counterexample (convex, Lipschitz) on the diagonal of a matrix.

The "model" holds one square parameter ``linear.weight`` (``2p x 2p``) starting at
``SignCounterexample.start()``; the loss is ``f(W) = sum_i |a_i - b_i| + eps |a_i + b_i|`` over its
diagonal pairs (minimum 0, so ``val_loss`` is the suboptimality). No data: batches are ``None`` and
the subgradient is exact, so runs are deterministic. Muon without momentum cannot go below
``eps sum |a + b|`` (half of ``f(W_0)`` at ``eps = 0.5``) for any lr schedule; error feedback
(``error_feedback = true``) removes the floor. See ``muonlab.data.lipschitz``.

References:
    Parshakova, Khaled, Crawshaw, Garrigos, Gower, "Muon Does Not Converge on Convex Lipschitz
    Functions", arXiv 2605.08980; Karimireddy et al., arXiv 1901.09847 (the counterexample).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Iterator

import torch
from torch import nn

from ...data.lipschitz import SignCounterexample
from ._common import check_finite, check_positive_int


class LipschitzModel(nn.Module):
    """Holds the square matrix as ``linear.weight``, which ``muonlab.param_groups`` routes as a hidden matrix."""

    def __init__(self, W0: torch.Tensor) -> None:
        super().__init__()
        self.linear = nn.Linear(W0.shape[1], W0.shape[0], bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(W0)
        # A lone Linear would be routed as the output head (AdamW: "last Linear of a model without
        # embeddings"). A frozen, unused one-row embedding of the same width tells the router that
        # this is a base model whose last Linear maps back to a hidden width, so the optimizer under
        # test (not its AdamW part) sees W. It has no gradient and is never updated.
        self.marker = nn.Embedding(1, W0.shape[1])
        self.marker.weight.requires_grad_(False)

    def forward(self) -> torch.Tensor:
        """The matrix itself (so a ``DistributedDataParallel`` wrapper works)."""
        return self.linear.weight


@dataclass
class LipschitzTask:
    """Minimize ``SignCounterexample(pairs, eps)`` from its fixed start.

    Attributes:
        pairs, eps: the problem (matrix ``2 pairs x 2 pairs``; ``0 < eps < 1``).
        target, steps: suboptimality threshold and default budget.
    """

    name: ClassVar[str] = "lipschitz"
    pairs: int = 4
    eps: float = 0.5
    # f(W_0) = 11 at pairs = 4, eps = 0.5; Muon with momentum 0 stays >= 5.5 (the floor) for ever.
    target: float = 0.5
    steps: int = 400

    def __post_init__(self) -> None:
        check_positive_int(pairs=self.pairs, steps=self.steps)
        check_finite(positive=True, target=self.target)
        _ = self.problem  # invalid eps fails at construction

    @cached_property
    def problem(self) -> SignCounterexample:
        """The fp32 problem."""
        return SignCounterexample(self.pairs, self.eps, dtype=torch.float32)

    def make_model(self, seed: int) -> nn.Module:
        """The same start for every seed (the problem is deterministic)."""
        return LipschitzModel(self.problem.start())

    def train_batches(self, seed: int) -> Iterator[None]:
        """Endless ``None`` batches."""
        return itertools.repeat(None)

    def loss(self, model: nn.Module, batch: None = None) -> torch.Tensor:
        """``f(W)`` = suboptimality."""
        return self.problem.loss(model())

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``val_loss`` = the loss; ``floor`` = ``eps sum |a + b|``, which sign steps cannot change."""
        W = model()
        return {"val_loss": float(self.loss(model)), "floor": self.problem.floor(W)}
