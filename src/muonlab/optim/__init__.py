"""Optimizers: the chain shell, the presets and the registry."""

from .presets import AdamW, Muon
from .registry import OptimizerInfo, optimizer_infos, optimizers, register
from .shell import ChainOptimizer

__all__ = ["AdamW", "ChainOptimizer", "Muon", "OptimizerInfo", "optimizer_infos", "optimizers", "register"]
