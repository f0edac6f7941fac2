"""Stages: update math with explicit named state, applied to stacks of same-shape matrices."""

from .adam import adam
from .base import Stack
from .decay import decay_weights
from .momentum import nesterov
from .orthogonalize import as_dtype, orthogonalize, sign
from .scale import ADJUST_LR, MATCHED_ADAMW_RMS, scale_by_shape, shape_factor

__all__ = [
    "ADJUST_LR", "MATCHED_ADAMW_RMS", "Stack", "adam", "as_dtype", "decay_weights", "nesterov",
    "orthogonalize", "scale_by_shape", "shape_factor", "sign",
]
