"""The workload interface: what is measured, kept apart from how it is optimized (AlgoPerf style).

A task owns data, model, loss, evaluation, a target and a default step budget. The runner
(`muonlab.bench.runner`) only ever talks to a task through this interface, so any optimizer
in `muonlab.optimizers()` can be run on any task.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

import torch
from torch import nn


class Task(Protocol):
    """A benchmark workload.

    Attributes:
        name: registry name, e.g. ``"gpt"``.
        target: validation loss at which "steps to target" is counted.
        steps: default training budget in optimizer steps.
    """

    name: str
    target: float
    steps: int

    def make_model(self, seed: int) -> nn.Module:
        """A freshly initialized model (deterministic given ``seed``)."""
        ...

    def train_batches(self, seed: int) -> Iterator[Any]:
        """An endless, deterministic (given ``seed``) stream of training batches."""
        ...

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Scalar training loss of ``model`` on ``batch``."""
        ...

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics on a fixed held-out set; always contains ``"val_loss"``."""
        ...
