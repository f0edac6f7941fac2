"""Checks of a curvature configuration before any work: types, ranges, names, hyperparameters.

:func:`validate` raises :class:`~muonlab.bench.overrides.ConfigError` (a ``ValueError``) whose
message starts with the dotted key at fault, e.g. ``steps: must be an integer >= 1, got -5`` or
``optimizers.muon.betaz: unknown hyperparameter 'betaz' for muon; did you mean 'adamw_betas'?``.
Every optimizer is constructed once on a small stand-in model, so an invalid value is reported with
the constructor's own ``ValueError`` message.

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

from muonlab.bench.overrides import ConfigError, did_you_mean, unknown_name

ATTENTION_MATRICES = ("c_q", "c_k", "c_v", "c_proj")  # muonlab.bench.models attention weights
EXAMPLE_KEYS = ("d", "alpha", "rho", "sigma_ratio")


def _fail(key: str, msg: str) -> None:
    raise ConfigError(f"{key}: {msg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def check_types(obj: Any, where: str = "") -> None:
    """Every field holds a value of its default's kind (int, number, bool, str, list, table)."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{where}{f.name}"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            check_types(value, f"{key}.")
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                _fail(key, f"must be true or false, got {value!r}")
        elif isinstance(default, int) and not _is_int(value):
            _fail(key, f"must be an integer, got {value!r}")
        elif isinstance(default, float) and not _is_number(value):
            _fail(key, f"must be a finite number, got {value!r}")
        elif isinstance(default, (str, list, dict)) and not isinstance(value, type(default)):
            _fail(key, f"must be a {type(default).__name__.replace('dict', 'table')}, got {value!r}")


def _at_least(key: str, value: Any, low: int) -> None:
    if value < low:
        _fail(key, f"must be an integer >= {low}, got {value!r}")


def _seeds(key: str, seeds: list) -> None:
    if not seeds or not all(_is_int(s) for s in seeds) or len(set(seeds)) != len(seeds):
        _fail(key, f"must be a non-empty list of distinct integers, got {seeds!r}")


def _positive_list(key: str, values: list, allow_zero: bool = False) -> None:
    if not values or not all(_is_number(v) and (v > 0 or (allow_zero and v == 0)) for v in values):
        _fail(key, f"must be a non-empty list of numbers {'>= 0' if allow_zero else '> 0'}, got {values!r}")


def check_schedule(schedule: dict[str, Any]) -> None:
    """``schedule.kind``, ``warmup`` and ``min_lr_ratio``.

    A warmup longer than a run is allowed (the run then ramps its lr all the way, as tiny smoke
    configurations do); only the values the schedule itself rejects are errors.
    """
    from muonlab.bench.schedule import SCHEDULES

    for key in schedule:
        if key not in ("kind", "warmup", "min_lr_ratio"):
            _fail(f"schedule.{key}", unknown_name("key", key, ("kind", "warmup", "min_lr_ratio")))
    if schedule.get("kind") not in SCHEDULES:
        _fail("schedule.kind", f"must be one of {', '.join(SCHEDULES)}, got {schedule.get('kind')!r}")
    warmup = schedule.get("warmup", 0)
    if not _is_int(warmup) or warmup < 0:
        _fail("schedule.warmup", f"must be an integer >= 0, got {warmup!r}")
    ratio = schedule.get("min_lr_ratio", 0.0)
    if not _is_number(ratio) or not 0 <= ratio <= 1:
        _fail("schedule.min_lr_ratio", f"must be in [0, 1], got {ratio!r}")


def check_task(task: dict[str, Any], key: str) -> None:
    """Every key of a gpt task table is one the task accepts."""
    from muonlab.bench.tasks import task_keys

    valid = task_keys("gpt")
    for k in task:
        if k not in valid:
            _fail(f"{key}.{k}", f"unknown key {k!r} for the gpt task"
                  + (did_you_mean(k, valid) or f" (valid: {', '.join(valid)})"))


def check_optimizers(optimizers: dict[str, Any]) -> None:
    """Registered names, an ``lr`` > 0 each, and hyperparameters their constructors accept."""
    import torch

    import muonlab
    from muonlab.bench.validate import construct

    if len(optimizers) < 2:
        _fail("optimizers", f"must name two optimizers (baseline first, Muon-like last), got {list(optimizers)}")
    registry = muonlab.optimizers()
    # A stand-in with a hidden matrix and AdamW parameters; the constructors check values, not shapes.
    with torch.random.fork_rng():
        model = torch.nn.Sequential(torch.nn.Embedding(8, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 8))
    for name, hp in optimizers.items():
        key = f"optimizers.{name}"
        if name not in registry:
            _fail(key, unknown_name("optimizer", name, registry))
        if not isinstance(hp, dict):
            _fail(key, f"must be a table of hyperparameters, got {hp!r}")
        lr = hp.get("lr")
        if not _is_number(lr) or lr <= 0:
            _fail(f"{key}.lr", f"must be a number > 0, got {lr!r}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # routing notes about the stand-in model are noise here
            construct(name, registry[name], model, float(lr), {k: v for k, v in hp.items() if k != "lr"}, key)


def validate(cfg: Any) -> None:
    """Check a :class:`~muonlab.bench.curvature.config.CurvatureConfig`; raises ``ConfigError``."""
    check_types(cfg)
    _at_least("threads", cfg.threads, 1)
    _seeds("seeds", cfg.seeds)
    _at_least("steps", cfg.steps, 1)
    if not 1 <= cfg.probe_every <= cfg.steps:
        _fail("probe_every", f"must be in [1, steps={cfg.steps}], got {cfg.probe_every}")
    if cfg.grad_clip < 0:
        _fail("grad_clip", f"must be >= 0, got {cfg.grad_clip}")
    check_task(cfg.task, "task")
    p = cfg.probe
    _at_least("probe.probe_batches", p.probe_batches, 1)
    _at_least("probe.top_eig_iters", p.top_eig_iters, 0)
    sw = cfg.sweep
    if sw.enabled:
        _positive_list("sweep.exponents", sw.exponents, allow_zero=True)
        _at_least("sweep.steps", sw.steps, 1)
        if not 1 <= sw.probe_every <= sw.steps:
            _fail("sweep.probe_every", f"must be in [1, sweep.steps={sw.steps}], got {sw.probe_every}")
        _seeds("sweep.seeds", sw.seeds)
    st = cfg.structure
    if st.enabled:
        _at_least("structure.steps", st.steps, 1)
        _at_least("structure.r", st.r, 1)
        for key in ("lr", "adamw_lr"):
            if getattr(st, key) <= 0:
                _fail(f"structure.{key}", f"must be > 0, got {getattr(st, key)}")
        for m in st.matrices:
            if m not in ATTENTION_MATRICES:
                _fail("structure.matrices", unknown_name("attention matrix", m, ATTENTION_MATRICES))
        check_task(st.task, "structure.task")
    q = cfg.quadratic
    if q.enabled:
        _at_least("quadratic.d", q.d, 1)
        _at_least("quadratic.steps", q.steps, 1)
        for key in ("rhos", "alphas", "sigma_ratios"):
            _positive_list(f"quadratic.{key}", getattr(q, key))
        if len(q.adam_betas) != 2 or not all(_is_number(b) and 0 <= b < 1 for b in q.adam_betas):
            _fail("quadratic.adam_betas", f"must be two numbers in [0, 1), got {q.adam_betas!r}")
        for key in q.example:
            if key not in EXAMPLE_KEYS:
                _fail(f"quadratic.example.{key}", unknown_name("key", key, EXAMPLE_KEYS))
    check_schedule(cfg.schedule)
    check_optimizers(cfg.optimizers)
