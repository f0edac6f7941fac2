"""muonlab: orthogonalized-momentum optimizers (the Muon family), benchmarks and curvature diagnostics.

>>> import muonlab
>>> opt = muonlab.Muon(muonlab.param_groups(model), lr=0.02, adamw_lr=3e-4)
"""

from . import diagnostics, orth
from .optim import (
    NAMO,
    NAMOD,
    AdaGO,
    AdaMuon,
    AdamSingleBeta,
    AdamW,
    ChainOptimizer,
    Muon,
    MuonEF,
    NorMuon,
    OptimizerInfo,
    SFNorMuon,
    TrasMuon,
    optimizer_infos,
    optimizers,
    register,
)
from .optim import NGNM, Pion
from .routing import classify, param_groups

__version__ = "0.1.0"

__all__ = [
    "NAMO", "NAMOD", "AdaGO", "AdaMuon", "AdamSingleBeta", "AdamW", "ChainOptimizer", "Muon", "MuonEF", "NorMuon", "OptimizerInfo", "SFNorMuon", "TrasMuon",
    "classify", "diagnostics", "optimizer_infos", "optimizers", "orth", "param_groups", "register",
    "Pion", "NGNM",
]
