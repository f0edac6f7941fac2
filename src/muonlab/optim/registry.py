"""Registry of public optimizers with sample hyperparameters (the contract suite runs over it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .presets import AdamW, Muon


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


register("adamw", AdamW, {"lr": 1e-2}, {"lr": 1e-2, "weight_decay": 0.1, "betas": (0.8, 0.95)})
register(
    "muon", Muon,
    {"lr": 0.02},
    {"lr": 0.02, "nesterov": False, "momentum_form": "sum", "weight_decay": 0.1, "adjust_lr": "rms", "ns_dtype": "float32"},
    {"lr": 0.02, "orthogonalizer": "polar_express", "ns_steps": 6, "batch_3d": True, "adjust_lr": "none"},
)
