"""Orthogonalizers: tensor -> approximate polar factor ``U V^T`` (pure tensor maths).

Kernels:
    * :func:`newton_schulz` -- odd quintic iteration with a per-step coefficient schedule
      ("jordan", "you", "polar_express", "polar_express_dion", "cubic", or your own list).
    * :func:`gram_newton_schulz` -- the same iteration run on the small Gram matrix.
    * :func:`aol_newton_schulz` -- Turbo-Muon: AOL row scaling instead of Frobenius normalisation.
    * :func:`svd_polar` -- exact polar factor by SVD (reference).
    * :func:`auto_orthogonalize` (``"auto"``: Jordan's quintic, the presets' default; ``"auto_you"``) --
      per shape, NS or Gram-NS of the same polynomial, whichever has fewer FLOPs.
    * :func:`polar_express_coefficients` -- the Polar Express minimax schedule generator.

Registry: :func:`resolve` (name or callable -> ``f(X, steps, dtype)``) and :func:`available`.
This package imports nothing else from muonlab.

References:
    Keller Jordan, Muon (2024), https://github.com/KellerJordan/Muon.
    Amsel, Persson, Musco, Gower, "The Polar Express", arXiv 2505.16932.
    Zhang, Amsel, Chen, Dao, "Gram Newton-Schulz" (2026), https://github.com/Dao-AILab/gram-newton-schulz.
"""

from muonlab.orth.aol import TURBO_STEPS, aol_newton_schulz, turbo_coefficients
from muonlab.orth.auto import auto_orthogonalize, choose
from muonlab.orth.gram import default_restarts, gram_newton_schulz
from muonlab.orth.polar_express import PAPER_CUSHION, optimal_quintic, polar_express_coefficients
from muonlab.orth.polynomial import newton_schulz
from muonlab.orth.registry import Orthogonalizer, available, resolve
from muonlab.orth.schedules import (
    CUBIC,
    DEFAULT_PRESCALE,
    JORDAN,
    POLAR_EXPRESS,
    POLAR_EXPRESS_DION,
    POLAR_EXPRESS_RAW,
    SCHEDULES,
    YOU,
    apply_safety,
)
from muonlab.orth.svd import svd_polar

__all__ = [
    "CUBIC",
    "DEFAULT_PRESCALE",
    "JORDAN",
    "PAPER_CUSHION",
    "POLAR_EXPRESS",
    "POLAR_EXPRESS_DION",
    "POLAR_EXPRESS_RAW",
    "SCHEDULES",
    "TURBO_STEPS",
    "YOU",
    "Orthogonalizer",
    "aol_newton_schulz",
    "auto_orthogonalize",
    "choose",
    "apply_safety",
    "available",
    "default_restarts",
    "gram_newton_schulz",
    "newton_schulz",
    "optimal_quintic",
    "polar_express_coefficients",
    "resolve",
    "svd_polar",
    "turbo_coefficients",
]
