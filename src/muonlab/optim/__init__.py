"""Optimizers: the chain shell, the presets and the registry."""

from .presets import AdamW, Muon
from .registry import OptimizerInfo, optimizer_infos, optimizers, register
from .shell import ChainOptimizer

__all__ = ["AdamW", "ChainOptimizer", "Muon", "OptimizerInfo", "optimizer_infos", "optimizers", "register"]
from .adamuon import AdaMuon  # noqa: E402  (registers "adamuon")
from .normuon import NorMuon  # noqa: E402  (registers "normuon")
from .trasmuon import TrasMuon  # noqa: E402  (registers "trasmuon")

__all__ += ["AdaMuon", "NorMuon", "TrasMuon"]
from .adago import AdaGO  # noqa: E402  (registers "adago")
from .namo import NAMO, NAMOD  # noqa: E402  (registers "namo", "namo-d")

__all__ += ["AdaGO", "NAMO", "NAMOD"]
