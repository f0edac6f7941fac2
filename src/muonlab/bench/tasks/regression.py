"""``regression``: an MLP fitting a smooth random function (the AdaGO paper's task family).

The AdaGO paper evaluates on "function regression", but its exact target function, data sizes
and architecture were not available (no official AdaGO code was found). Our choice, documented
here: inputs ``x ~ U[-1, 1]^d`` and the fixed random sum of sinusoids

    f(x) = (1/Z) Σ_{j=1}^{K} c_j sin(ω_jᵀ x + φ_j),   ω_j ~ N(0, freq² I), φ_j ~ U[0, 2π), c_j ~ N(0, 1),

normalized by ``Z`` so that ``f`` has unit variance on a reference sample (so MSE 1.0 = predicting
the mean). The function, training set and validation set are fixed by ``data_seed``; the
training stream reshuffles a fixed training set each epoch (seed-dependent order).

References:
    AdaGO: "AdaGrad Meets Muon: Adaptive Stepsizes for Orthogonal Updates" (function regression
    and CIFAR-10 experiments; exact setup not retrieved).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ...data.zipf_pcfg import derive_seed
from ..models import MLP, build
from ._common import check_finite, check_positive_int, to_device

Batch = tuple[torch.Tensor, torch.Tensor]


def shuffled_minibatches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> Iterator[Batch]:
    """Endless minibatches of ``(x, y)``: a fresh permutation per epoch from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    n = x.size(0)
    batch_size = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - batch_size + 1, batch_size):  # drop the ragged tail: fixed batch shape
            idx = perm[i : i + batch_size]
            yield x[idx], y[idx]


@dataclass
class RegressionTask:
    """MSE regression of a random sum of sinusoids with a tanh MLP.

    Attributes:
        dim, n_terms, freq: input dimension, number of sinusoids K, frequency scale.
        n_train, n_val: fixed training / validation set sizes.
        width, depth: MLP width and number of linear layers (depth >= 2).
        batch_size, data_seed: minibatch size and the seed of function and data sets.
        target, steps: steps-to-target threshold (val MSE) and default budget.
    """

    name: ClassVar[str] = "regression"
    dim: int = 8
    n_terms: int = 16
    freq: float = 1.0
    n_train: int = 8192
    n_val: int = 2048
    width: int = 128
    depth: int = 3
    batch_size: int = 128
    data_seed: int = 0
    # AdamW (betas (0.9, 0.95), warmup + cosine, 1000 steps): lr 1e-2 reaches 0.02 at ~450 steps
    # and ends near 0.005; lr 3e-3 reaches it at ~550 (freq 2 was too hard: 0.19 after 1000).
    target: float = 0.02
    steps: int = 1000

    def __post_init__(self) -> None:
        check_positive_int(
            dim=self.dim, n_terms=self.n_terms, n_train=self.n_train, n_val=self.n_val,
            width=self.width, batch_size=self.batch_size, steps=self.steps,
        )
        check_positive_int(depth=self.depth)
        if self.depth < 2:
            raise ValueError(f"depth must be >= 2 (input and output layers), got {self.depth}")
        check_finite(positive=True, freq=self.freq, target=self.target)

    def function(self, x: torch.Tensor) -> torch.Tensor:
        """The target ``f(x)`` for inputs ``(n, dim)``; returns ``(n, 1)``."""
        omega, phase, coef, scale = self._params
        return (torch.sin(x @ omega + phase) @ coef / scale)[:, None]

    @cached_property
    def _params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        g = torch.Generator().manual_seed(derive_seed(self.data_seed, "regression-function"))
        omega = self.freq * torch.randn(self.dim, self.n_terms, generator=g)
        phase = 2 * math.pi * torch.rand(self.n_terms, generator=g)
        coef = torch.randn(self.n_terms, generator=g)
        ref = 2 * torch.rand(8192, self.dim, generator=g) - 1
        scale = float((torch.sin(ref @ omega + phase) @ coef).std())
        return omega, phase, coef, scale

    @cached_property
    def _data(self) -> tuple[Batch, Batch]:
        g = torch.Generator().manual_seed(derive_seed(self.data_seed, "regression-data"))
        x_train = 2 * torch.rand(self.n_train, self.dim, generator=g) - 1
        x_val = 2 * torch.rand(self.n_val, self.dim, generator=g) - 1
        return (x_train, self.function(x_train)), (x_val, self.function(x_val))

    def make_model(self, seed: int) -> nn.Module:
        """A tanh MLP ``dim -> width x (depth-1) -> 1`` initialized from ``seed``."""
        return build(lambda: MLP(self.dim, self.width, self.depth), seed)

    def train_batches(self, seed: int) -> Iterator[Batch]:
        """Endless shuffled minibatches of the fixed training set."""
        (x, y), _ = self._data
        return shuffled_minibatches(x, y, self.batch_size, seed)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Mean squared error."""
        x, y = to_device(batch, model)
        return F.mse_loss(model(x), y)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """MSE on the fixed validation set (unit = variance of ``f``)."""
        _, val = self._data
        return {"val_loss": float(self.loss(model, val))}
