"""Everything that can be checked before the first training step, with errors that name the key.

:func:`validate` resolves the optimizer classes and the task, builds the task (catching a missing
data path or an unknown task option), constructs every optimizer once on the task's model (catching
unknown or invalid hyperparameters) and instantiates the callbacks. Any problem is a
:class:`~muonlab.bench.config.ConfigError`, raised before any run starts.

References:
    AlgoPerf (Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv 2306.07179):
    the workload (task) is kept apart from the algorithm (optimizer).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from muonlab.bench.callbacks import CALLBACKS, make_callbacks
from muonlab.bench.config import ConfigError, ExperimentConfig
from muonlab.bench.overrides import did_you_mean, unknown_name

OptimizerRegistry = Mapping[str, type]
TaskFactory = Callable[..., Any]

# Task-config keys that hold filesystem paths (checked for existence before the task is built).
_PATH_KEY = re.compile(r"(^|_)(path|dir|root|file)$")


def default_optimizers() -> dict[str, type]:
    """``muonlab.optimizers()``: the optimizer registry (name -> class)."""
    import muonlab

    return dict(muonlab.optimizers())


def default_tasks() -> dict[str, TaskFactory]:
    """The task registry ``muonlab.bench.tasks.TASKS`` (name -> factory taking the task config)."""
    from muonlab.bench.tasks import TASKS

    return dict(TASKS)


def build_optimizer(name: str, cls: type, model: torch.nn.Module, lr: float,
                    hparams: Mapping[str, Any], process_group: Any = None) -> torch.optim.Optimizer:
    """``cls(param_groups(model), lr=lr, **hparams)``; plain AdamW takes ``model.parameters()``.

    ``process_group`` (data-parallel runs only) is passed on, so each rank orthogonalizes its share.
    """
    if process_group is not None:
        hparams = {**hparams, "process_group": process_group}
    if getattr(cls, "default_algorithm", "orthogonal") == "adamw":  # AdamW and its configurations
        return cls(model.parameters(), lr=lr, **hparams)
    import muonlab

    return cls(muonlab.param_groups(model), lr=lr, **hparams)


REF_PREFIX = "best:"


def resolve_refs(hparams: Mapping[str, Any], best_lr: Mapping[str, float]) -> dict[str, Any]:
    """Replace ``"best:<optimizer>"`` values by that optimizer's best lr in this experiment.

    ``adamw_lr = "best:adamw"`` gives the AdamW part of a hybrid the lr that won AdamW's own sweep,
    so hybrids differ from AdamW only in how they treat the hidden matrices.
    """
    out = {}
    for key, value in hparams.items():
        if isinstance(value, str) and value.startswith(REF_PREFIX):
            value = best_lr[value[len(REF_PREFIX):]]
        out[key] = value
    return out


def check_refs(cfg: ExperimentConfig) -> None:
    """Every ``"best:<name>"`` names an optimizer listed *earlier* in the config (its sweep runs first)."""
    seen: list[str] = []
    for opt in cfg.optimizers:
        for key, value in opt.hparams.items():
            if isinstance(value, str) and value.startswith(REF_PREFIX) and value[len(REF_PREFIX):] not in seen:
                raise ConfigError(f"optimizers.{opt.name}.{key}: {value!r} must name an optimizer listed before "
                                  f"{opt.name!r} in the config (listed before: {seen}); keep that optimizer in "
                                  f"--optimizers or give a number with --set optimizers.{opt.name}.{key}=...")
        seen.append(opt.name)


def _unknown_kwarg(exc: TypeError) -> str | None:
    match = re.search(r"unexpected keyword argument '([^']+)'", str(exc))
    return match.group(1) if match else None


def keyword_names(factory: Callable[..., Any]) -> list[str]:
    """The keyword arguments ``factory`` accepts, following ``**kwargs`` into the parent classes
    (``NAMOD(**kwargs)`` passes them on to ``NAMO``)."""
    targets = list(factory.__mro__) if isinstance(factory, type) else [factory]
    names: list[str] = []
    for target in targets:
        fn = target.__init__ if isinstance(target, type) else target
        if isinstance(target, type) and "__init__" not in vars(target):
            continue
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            break
        names += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                  and p.name not in ("self", "params") and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def check_device(device: str, key: str = "device") -> None:
    """Raise ``ConfigError`` naming ``key`` when ``device`` does not exist in this torch build / machine."""
    kind, _, index = device.partition(":")
    if device == "auto" or kind == "cpu":
        return
    backends = {"cuda": lambda: (torch.cuda.is_available(), torch.cuda.device_count()),
                "xpu": lambda: (hasattr(torch, "xpu") and torch.xpu.is_available(),
                                torch.xpu.device_count() if hasattr(torch, "xpu") else 0),
                "mps": lambda: (torch.backends.mps.is_available(), 1)}
    if kind not in backends:
        raise ConfigError(f"{key}: " + unknown_name("device", device, ["auto", "cpu", *backends]))
    available, count = backends[kind]()
    if not available:
        built = " (this torch build has no CUDA)" if kind == "cuda" and torch.version.cuda is None else ""
        raise ConfigError(f"{key}: {device!r} is not available on this machine{built}, torch {torch.__version__}; "
                          "use 'cpu' or 'auto'")
    if index and (not index.isdigit() or int(index) >= count):
        raise ConfigError(f"{key}: {device!r}: no such device ({count} {kind} device(s) visible)")


def _takes_any_keyword(cls: type) -> bool:
    """Whether ``**kwargs`` reaches past every ``__init__`` in the MRO (then names cannot be checked ahead)."""
    for target in cls.__mro__:
        if "__init__" in vars(target):
            try:
                params = inspect.signature(target.__init__).parameters.values()
            except (TypeError, ValueError):
                return True
            if not any(p.kind is p.VAR_KEYWORD for p in params):
                return False
    return True


def unknown_hyperparameter(name: str, cls: type, kw: str, key: str) -> ConfigError:
    """``"<key>.<kw>: unknown hyperparameter 'kw' for <name>; did you mean ...?"``."""
    valid = [k for k in keyword_names(cls) if k not in ("lr", "process_group")]
    return ConfigError(f"{key}.{kw}: unknown hyperparameter {kw!r} for {name}"
                       + (did_you_mean(kw, valid) or f" (valid: {', '.join(valid)})"))


def check_hyperparameter_names(name: str, cls: type, hparams: Mapping[str, Any], key: str) -> None:
    """Unknown keyword arguments of an optimizer, found from its signature (no model needed)."""
    if _takes_any_keyword(cls):
        return
    valid = set(keyword_names(cls))
    for kw in hparams:
        if kw not in valid:
            raise unknown_hyperparameter(name, cls, kw, key)


def construct(name: str, cls: type, model: torch.nn.Module, lr: float, hparams: Mapping[str, Any],
              key: str) -> torch.optim.Optimizer:
    """Build the optimizer once, turning the constructor's complaints into ``ConfigError`` naming ``key``.

    An unknown keyword becomes ``"<key>.<kw>: unknown hyperparameter 'kw' for <name>; did you mean
    ...?"``; a ``ValueError`` (an invalid value) keeps the constructor's own message.
    """
    try:
        return build_optimizer(name, cls, model, lr, hparams)
    except TypeError as exc:
        kw = _unknown_kwarg(exc)
        if kw is None:
            raise
        raise unknown_hyperparameter(name, cls, kw, key) from None
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def check_paths(task_config: Mapping[str, Any]) -> None:
    """Raise ``ConfigError`` naming ``task.<key>`` for a path-like key whose path does not exist."""
    for key, value in task_config.items():
        if isinstance(value, str) and value and _PATH_KEY.search(key) and not Path(value).expanduser().exists():
            raise ConfigError(f"task.{key}: path does not exist: {value!r}")


def make_task(cfg: ExperimentConfig, tasks: Mapping[str, TaskFactory] | None = None) -> Any:
    """Build the experiment's task, turning the task factory's complaints into ``ConfigError``."""
    registry = default_tasks() if tasks is None else tasks
    if cfg.task not in registry:
        raise ConfigError("task.name: " + unknown_name("task", cfg.task, registry))
    check_paths(cfg.task_config)
    try:
        return registry[cfg.task](**cfg.task_config)
    except TypeError as exc:
        key = _unknown_kwarg(exc)
        if key is None:
            raise
        valid = keyword_names(registry[cfg.task])
        raise ConfigError(f"task.{key}: unknown key {key!r} for task {cfg.task!r}"
                          + (did_you_mean(key, valid) or f" (valid: {', '.join(valid)})")) from None
    except FileNotFoundError as exc:
        raise ConfigError(f"task: data not found for task {cfg.task!r}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"task: invalid config for task {cfg.task!r}: {exc}") from None


def validate(cfg: ExperimentConfig, *, optimizers: OptimizerRegistry | None = None,
             tasks: Mapping[str, TaskFactory] | None = None) -> tuple[Any, dict[str, type]]:
    """Check the whole experiment before training; returns ``(task, {optimizer name: class})``.

    Raises:
        ConfigError: naming the offending key (``optimizers.<name>``, ``optimizers.<name>.<hparam>``,
            ``task.name``, ``task.<key>``, ``callbacks.<name>``, ``steps``...).
    """
    check_device(cfg.device)
    registry = default_optimizers() if optimizers is None else dict(optimizers)
    classes = {}
    for opt in cfg.optimizers:
        if opt.name not in registry:
            raise ConfigError(f"optimizers.{opt.name}: " + unknown_name("optimizer", opt.name, registry))
        classes[opt.name] = registry[opt.name]
        check_hyperparameter_names(opt.name, classes[opt.name], opt.hparams, f"optimizers.{opt.name}")
    for name, kwargs in cfg.callbacks.items():
        if name not in CALLBACKS:
            raise ConfigError(f"callbacks.{name}: " + unknown_name("callback", name, CALLBACKS))
        try:
            make_callbacks({name: kwargs})
        except ImportError as exc:
            raise ConfigError(f"callbacks.{name}: not available ({exc})") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"callbacks.{name}: {exc}") from None
    task = make_task(cfg, tasks)
    steps = cfg.steps if cfg.steps is not None else getattr(task, "steps", None)
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps: no step budget (the config has none and the task gives {steps!r})")
    if cfg.schedule.warmup >= steps:
        raise ConfigError(f"schedule.warmup: {cfg.schedule.warmup} must be smaller than steps={steps}")
    check_refs(cfg)
    placeholder = {o.name: o.lr_grid[0] for o in cfg.optimizers}  # any valid lr stands in for "best:"
    model = task.make_model(cfg.seeds[0])
    for opt in cfg.optimizers:
        construct(opt.name, classes[opt.name], model, opt.lr_grid[0], resolve_refs(opt.hparams, placeholder),
                  f"optimizers.{opt.name}")
    return task, classes
