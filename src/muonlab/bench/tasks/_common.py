"""Shared validation and device helpers for the benchmark tasks."""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn


def check_positive_int(**values: Any) -> None:
    """Raise ``ValueError`` naming the first argument that is not an int >= 1."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")


def check_finite(*, positive: bool = False, **values: Any) -> None:
    """Raise ``ValueError`` naming the first value that is not a finite number (> 0 if ``positive``)."""
    for key, value in values.items():
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (positive and value <= 0):
            need = "a finite number > 0" if positive else "a finite number"
            raise ValueError(f"{key} must be {need}, got {value!r}")


def check_choice(key: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ``ValueError`` naming ``key`` when ``value`` is not one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{key} must be one of {choices}, got {value!r}")


def device_of(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for parameterless models)."""
    return next(model.parameters(), torch.empty(0)).device


def to_device(batch: tuple[torch.Tensor, ...], model: nn.Module) -> tuple[torch.Tensor, ...]:
    """Move a batch of tensors to the model's device (tasks build batches on the CPU)."""
    dev = device_of(model)
    return tuple(t.to(dev, non_blocking=True) for t in batch)
