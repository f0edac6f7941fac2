"""Optimizers: the chain shell, the presets and the registry.

Importing a preset module registers its classes, so the import order below is the registry order.
"""

from .presets import AdamW, Muon  # registers "adamw", "muon"
from .muon_ef import MuonEF  # registers "muon-ef"
from .namo import NAMO, NAMOD  # registers "namo", "namo-d"
from .adago import AdaGO  # registers "adago"
from .trasmuon import TrasMuon  # registers "trasmuon"
from .normuon import NorMuon  # registers "normuon"
from .adamuon import AdaMuon  # registers "adamuon"
from .sfnormuon import SFNorMuon  # registers "sfnormuon"
from .adam_single_beta import AdamSingleBeta  # registers "adam-single-beta"
from .registry import OptimizerInfo, optimizer_infos, optimizers, register
from .shell import ChainOptimizer
from .pion import Pion  # registers "pion"
from .ngnm import NGNM  # registers "ngnm"

__all__ = [
    "NAMO", "NAMOD", "AdaGO", "AdaMuon", "AdamSingleBeta", "AdamW", "ChainOptimizer", "Muon", "MuonEF", "NorMuon", "OptimizerInfo", "SFNorMuon", "TrasMuon",
    "optimizer_infos", "optimizers", "register",
    "Pion", "NGNM",
]
