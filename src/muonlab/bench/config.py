"""Experiment configuration: TOML files parsed into dataclasses, CLI overrides, ``--quick`` shrinking.

An experiment file looks like (see ``docs/bench.md`` for the annotated version)::

    name = "demo"              # results go to <out>/<name>/
    steps = 300                # step budget (default: the task's own)
    eval_every = 25
    seeds = [0, 1]
    [task]                     # name + keyword arguments of make_task(name, **cfg)
    name = "gpt"
    [schedule]
    kind = "warmup_cosine"     # | "linear_decay" | "constant"
    warmup = 30
    min_lr_ratio = 0.1
    [callbacks.update_stats]   # name -> keyword arguments of the callback factory
    every = 25
    [optimizers.adamw]         # lr_grid + fixed hyperparameters
    lr_grid = [1e-3, 3e-3]
    weight_decay = 0.1
    [quick]                    # deep-merged over the file by --quick
    steps = 40

Parsing is strict: an unknown key anywhere outside ``[task]``, ``[optimizers.*]`` and
``[callbacks.*]`` is a :class:`ConfigError` naming it; the free-form tables are checked against the
task factory and the optimizer constructors by :func:`muonlab.bench.validate.validate`.

References:
    TOML v1.0.0, https://toml.io/en/v1.0.0 (parsed with ``tomllib``, ``tomli`` on Python 3.10).
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from muonlab.bench.overrides import (ConfigError, apply_override, merge_quick, parse_override, shrink_quick,
                                     did_you_mean, unknown_name)
from muonlab.bench.schedule import SCHEDULES

__all__ = ["ConfigError", "ExperimentConfig", "OptimizerConfig", "ScheduleConfig", "apply_override",
           "config_dir", "load_config", "parse_override", "resolve_path", "shipped_configs"]


@dataclass
class ScheduleConfig:
    """LR schedule shared by every optimizer (see :mod:`muonlab.bench.schedule`)."""

    kind: str = "warmup_cosine"
    warmup: int = 0
    min_lr_ratio: float = 0.1


@dataclass
class OptimizerConfig:
    """One optimizer of the comparison: its lr grid and its fixed hyperparameters."""

    name: str
    lr_grid: list[float]
    hparams: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    """A resolved experiment (after overrides and ``--quick``)."""

    name: str
    task: str
    task_config: dict[str, Any]
    optimizers: list[OptimizerConfig]
    steps: int | None = None          # None: the task's default budget
    eval_every: int = 50
    target: float | None = None       # None: the task's own target
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    sweep_seeds: int = 1              # how many of `seeds` the lr sweep runs (the rest rerun the best lr)
    grad_clip: float | None = None    # global grad-norm clip; None or 0 disables
    grad_accum: int = 1               # micro-batches (of the task's batch_size) per optimizer step
    device: str = "cpu"               # "cpu", "cuda", "cuda:1", ... or "auto" (cuda when available)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    callbacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    quick: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the resolved configuration."""
        return dataclasses.asdict(self)


_TOP_KEYS = {"name", "task", "optimizers", "steps", "eval_every", "target", "seeds", "sweep_seeds",
             "grad_clip", "grad_accum", "device", "schedule", "callbacks", "quick"}
_SCHEDULE_KEYS = {f.name for f in dataclasses.fields(ScheduleConfig)}

def config_dir() -> Path:
    """The folder of shipped experiment configs (``muonlab/bench/configs``)."""
    return Path(str(resources.files("muonlab.bench") / "configs"))


def shipped_configs() -> list[str]:
    """Names of the shipped experiment configs."""
    return sorted(p.stem for p in config_dir().glob("*.toml"))


def resolve_path(config: str | Path) -> Path:
    """A shipped config name (``"demo"``) or a path to a TOML file -> the file's path."""
    path = Path(config)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {str(path)!r}")
        return path
    shipped = config_dir() / f"{config}.toml"
    if not shipped.is_file():
        raise ConfigError(f"unknown config {str(config)!r}: not a file and not one of the shipped "
                          f"configs {shipped_configs()}")
    return shipped


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def from_dict(raw: dict[str, Any], *, default_name: str = "experiment") -> ExperimentConfig:
    """Strictly parse a raw config dict (unknown keys and bad types raise :class:`ConfigError`)."""
    for key in raw:
        _require(key in _TOP_KEYS, key, unknown_name("key", key, _TOP_KEYS))
    # Scalars first: a bad budget is reported as itself, not through a value derived from it.
    steps = raw.get("steps")
    _require(steps is None or (_int(steps) and steps > 0), "steps", f"must be an integer > 0, got {steps!r}")
    eval_every = raw.get("eval_every", 50)
    _require(_int(eval_every) and eval_every > 0, "eval_every", f"must be an integer > 0, got {eval_every!r}")
    task = raw.get("task")
    _require(isinstance(task, dict) and isinstance(task.get("name"), str), "task.name",
             "missing: the [task] table needs a name")
    task_config = {k: v for k, v in task.items() if k != "name"}
    sched_raw = raw.get("schedule", {}) or {}
    _require(isinstance(sched_raw, dict), "schedule", "must be a table")
    for key in sched_raw:
        _require(key in _SCHEDULE_KEYS, f"schedule.{key}", unknown_name("key", key, _SCHEDULE_KEYS))
    schedule = ScheduleConfig(**sched_raw)
    _require(schedule.kind in SCHEDULES, "schedule.kind", f"must be one of {SCHEDULES}, got {schedule.kind!r}")
    _require(_int(schedule.warmup) and schedule.warmup >= 0, "schedule.warmup",
             f"must be an integer >= 0, got {schedule.warmup!r}")
    _require(_number(schedule.min_lr_ratio) and 0 <= schedule.min_lr_ratio <= 1, "schedule.min_lr_ratio",
             f"must be in [0, 1], got {schedule.min_lr_ratio!r}")

    opts_raw = raw.get("optimizers")
    _require(isinstance(opts_raw, dict) and len(opts_raw) > 0, "optimizers",
             "at least one [optimizers.<name>] table is required")
    optimizers = []
    for name, spec in opts_raw.items():
        key = f"optimizers.{name}"
        _require(isinstance(spec, dict), key, "must be a table")
        grid = spec.get("lr_grid")
        _require(isinstance(grid, list), f"{key}.lr_grid", "missing (a list of learning rates)")
        _require(len(grid) > 0, f"{key}.lr_grid", "empty grid")
        for lr in grid:
            _require(_number(lr) and lr > 0, f"{key}.lr_grid", f"learning rates must be > 0, got {lr!r}")
        _require("lr" not in spec, f"{key}.lr", "use lr_grid (the lr is swept)")
        hparams = {k: v for k, v in spec.items() if k != "lr_grid"}
        optimizers.append(OptimizerConfig(name, [float(x) for x in grid], hparams))

    target = raw.get("target")
    _require(target is None or _number(target), "target", f"must be a number, got {target!r}")
    seeds = raw.get("seeds", [0, 1])
    _require(isinstance(seeds, list) and len(seeds) > 0 and all(isinstance(s, int) for s in seeds),
             "seeds", f"must be a non-empty list of integers, got {seeds!r}")
    _require(len(set(seeds)) == len(seeds), "seeds", f"duplicate seeds in {seeds!r}")
    sweep_seeds = raw.get("sweep_seeds", 1)
    _require(isinstance(sweep_seeds, int) and 1 <= sweep_seeds <= len(seeds), "sweep_seeds",
             f"must be an integer in [1, len(seeds)={len(seeds)}], got {sweep_seeds!r}")
    clip = raw.get("grad_clip")
    _require(clip is None or (_number(clip) and clip >= 0), "grad_clip", f"must be a number >= 0, got {clip!r}")
    accum = raw.get("grad_accum", 1)
    _require(isinstance(accum, int) and accum >= 1, "grad_accum", f"must be an integer >= 1, got {accum!r}")
    device = raw.get("device", "cpu")
    _require(isinstance(device, str) and (device == "auto" or device.split(":")[0] in ("cpu", "cuda", "mps", "xpu")),
             "device", f"must be 'auto', 'cpu', 'cuda[:i]', 'mps' or 'xpu', got {device!r}")
    callbacks = raw.get("callbacks", {}) or {}
    _require(isinstance(callbacks, dict) and all(isinstance(v, dict) for v in callbacks.values()),
             "callbacks", "must be a table of tables ([callbacks.<name>])")
    name = raw.get("name", default_name)
    _require(isinstance(name, str) and name and "/" not in name, "name", f"invalid experiment name {name!r}")
    return ExperimentConfig(
        name=name, task=task["name"], task_config=task_config, optimizers=optimizers, steps=steps,
        eval_every=eval_every, target=None if target is None else float(target), seeds=list(seeds),
        sweep_seeds=sweep_seeds, grad_clip=float(clip) if clip else None, grad_accum=accum, device=device,
        schedule=schedule,
        callbacks={k: dict(v) for k, v in callbacks.items()}, quick=bool(raw.get("quick") is True))


def load_config(config: str | Path | dict[str, Any], overrides: list[str] = (), *,
                optimizers: list[str] | None = None, quick: bool = False) -> ExperimentConfig:
    """Load an experiment: file or shipped name (or a raw dict), then ``--set``, ``--optimizers``, ``--quick``.

    Args:
        config: shipped config name, path to a TOML file, or an already-parsed dict.
        overrides: ``key=value`` strings with dotted keys; values are TOML literals.
        optimizers: keep only these optimizers (names must appear in the config).
        quick: shrink to a smoke run (the file's ``[quick]`` table, then generic caps).

    Raises:
        ConfigError: naming the offending key.
    """
    if isinstance(config, dict):
        raw, default_name = copy.deepcopy(config), "experiment"
    else:
        path = resolve_path(config)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        default_name = path.stem
    if quick:
        raw = merge_quick(raw)  # before --set, so the user's overrides win over the file's [quick]
    else:
        raw.pop("quick", None)
    for item in overrides:
        apply_override(raw, item)
    if optimizers:
        available = raw.get("optimizers") or {}
        for name in optimizers:
            _require(name in available, f"optimizers.{name}",
                     f"--optimizers names {name!r}, which this config does not define"
                     + (did_you_mean(name, available) or f" (defined: {', '.join(sorted(available))})"))
        raw["optimizers"] = {k: v for k, v in available.items() if k in optimizers}
    if quick:
        raw = shrink_quick(raw)
    cfg = from_dict(raw, default_name=default_name)
    if quick:
        cfg.name = f"{cfg.name}-quick"
    return cfg
