"""Registry of public optimizers with sample hyperparameters (the contract suite runs over it).

Each preset module registers its classes at import time (``register(...)`` at the bottom of the
module); ``muonlab.optim`` imports every preset module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OptimizerInfo:
    """One registered optimizer.

    Attributes:
        name: registry name (``"muon"``, ``"namo-d"``, ...).
        cls: the class.
        sample_kwargs: hyperparameter sets the contract suite exercises (each must train a quadratic).
    """

    name: str
    cls: type
    sample_kwargs: tuple[dict[str, Any], ...] = field(default_factory=lambda: ({},))


_REGISTRY: dict[str, OptimizerInfo] = {}


def register(name: str, cls: type, *sample_kwargs: dict[str, Any]) -> None:
    """Add ``cls`` under ``name`` with the given sample hyperparameter sets."""
    _REGISTRY[name] = OptimizerInfo(name, cls, tuple(sample_kwargs) or ({},))


def optimizers() -> dict[str, type]:
    """Registry name -> optimizer class."""
    return {name: info.cls for name, info in _REGISTRY.items()}


def optimizer_infos() -> list[OptimizerInfo]:
    """All registry entries, in registration order."""
    return list(_REGISTRY.values())
