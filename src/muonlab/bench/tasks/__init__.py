"""Benchmark tasks and their registry: ``TASKS`` and ``make_task(name, **cfg)``.

A task is a small dataclass implementing ``muonlab.bench.tasks.base.Task``; its fields are its
configuration. ``make_task`` rejects an unknown task, an unknown config key or a missing data
path with a ``ValueError`` that names it, at construction, before any training.

References:
    AlgoPerf (Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv:2306.07179):
    workloads kept apart from the algorithms that optimize them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import Task
from .gpt import GPTTask
from .image import ImageTask
from .lipschitz import LipschitzTask
from .quadratic import QuadraticTask
from .regression import RegressionTask

__all__ = ["TASKS", "Task", "GPTTask", "ImageTask", "LipschitzTask", "QuadraticTask", "RegressionTask", "make_task", "task_keys"]

TASKS: dict[str, type] = {
    "gpt": GPTTask,
    "regression": RegressionTask,
    "image": ImageTask,
    "quadratic": QuadraticTask,
    "lipschitz": LipschitzTask,
}


def task_keys(name: str) -> list[str]:
    """The config keys task ``name`` accepts (its dataclass fields)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    return [f.name for f in dataclasses.fields(TASKS[name]) if f.init]


def make_task(name: str, **cfg: Any) -> Task:
    """Build task ``name`` with config ``cfg``.

    Raises:
        ValueError: unknown task, unknown config key, invalid value, or missing data path
            (``muonlab.data.DataPathError`` is a ``ValueError`` too); the message names it.
    """
    keys = task_keys(name)
    unknown = sorted(set(cfg) - set(keys))
    if unknown:
        raise ValueError(f"unknown config key {unknown[0]!r} for task {name!r}; valid keys: {keys}")
    return TASKS[name](**cfg)
