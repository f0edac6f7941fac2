"""muonlab: orthogonalized-momentum optimizers (the Muon family), benchmarks and curvature diagnostics.

>>> import muonlab
>>> opt = muonlab.Muon(muonlab.param_groups(model), lr=0.02, adamw_lr=3e-4)
"""

from . import orth
from .optim import AdamW, ChainOptimizer, Muon, OptimizerInfo, optimizer_infos, optimizers, register
from .routing import classify, param_groups

__version__ = "0.1.0"

__all__ = [
    "AdamW", "ChainOptimizer", "Muon", "OptimizerInfo", "classify", "optimizer_infos", "optimizers", "orth",
    "param_groups", "register",
]
from .optim import AdaMuon, NorMuon, TrasMuon  # noqa: E402

__all__ += ["AdaMuon", "NorMuon", "TrasMuon"]
from .optim import NAMO, NAMOD, AdaGO  # noqa: E402

__all__ += ["AdaGO", "NAMO", "NAMOD"]
