"""Editing raw experiment configs: ``--set key=value`` overrides and ``--quick`` shrinking.

These work on the raw dict parsed from TOML, before :func:`muonlab.bench.config.from_dict` checks it,
so an override can introduce a key and the strict parser still reports it if it is unknown.

References:
    TOML v1.0.0, https://toml.io/en/v1.0.0 (override values are parsed as TOML literals).
"""

from __future__ import annotations

import copy
import difflib
import sys
from typing import Any, Iterable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


class ConfigError(ValueError):
    """An experiment configuration is invalid; the message names the offending key."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'steps'?"`` for the closest of ``choices`` (difflib), else ``""``.

    A prefixed choice also matches by its last part (``betaz`` -> ``adamw_betas``), since the
    hybrids' AdamW knobs are the AdamW names behind an ``adamw_`` prefix.
    """
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
    if not close:
        tails = {c.split("_", 1)[1]: c for c in reversed(choices) if "_" in c}
        close = [tails[t] for t in difflib.get_close_matches(str(name), list(tails), n=1, cutoff=0.6)]
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_name(what: str, name: str, choices: Iterable[str]) -> str:
    """``"unknown key 'stepz'; did you mean 'steps'?"``, or the valid names when none is close."""
    choices = sorted(str(c) for c in choices)
    hint = did_you_mean(name, choices)
    return f"unknown {what} {name!r}" + (hint or f" (valid: {', '.join(choices)})")


# Generic --quick shrinking, applied after the file's own [quick] table.
QUICK_MAX_STEPS = 40
QUICK_MAX_SEEDS = 2
# Size keys of the shipped tasks, capped by --quick (only ever made smaller than the config/default).
QUICK_TASK_CAPS = {"n_layer": 1, "n_embd": 32, "block_size": 32, "batch_size": 16, "width": 32,
                   "train_tokens": 100_000, "val_tokens": 20_000, "eval_batches": 4, "max_bytes": 500_000}


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=1e-3"`` -> ``(["a", "b"], 0.001)``; the value is a TOML literal, else a bare string."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = (s.strip() for s in item.split("=", 1))
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set has an empty key in {item!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare words such as task.data=zipf-pcfg
    return key.split("."), value


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply one ``--set key=value`` to the raw (dict) configuration in place."""
    keys, value = parse_override(item)
    node = raw
    for depth, k in enumerate(keys[:-1]):
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(keys)}: {'.'.join(keys[:depth + 1])} is not a table")
        node = child
    node[keys[-1]] = value


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated recursively by ``extra`` (tables merged, everything else replaced)."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _two_point(grid: list[float]) -> list[float]:
    """The two grid points around the grid's centre (the centre is where defaults sit)."""
    if len(grid) <= 2:
        return list(grid)
    mid = len(grid) // 2
    return list(grid[mid - 1:mid + 1]) if len(grid) % 2 == 0 else list(grid[mid:mid + 2])


def _task_defaults(name: Any) -> dict[str, Any]:
    """Constructor defaults of a registered task (empty when unknown: the caps then use the config only)."""
    try:
        import dataclasses

        from muonlab.bench.tasks import TASKS

        return {f.name: f.default for f in dataclasses.fields(TASKS[name]) if f.default is not dataclasses.MISSING}
    except (ImportError, KeyError, TypeError):
        return {}


def shrink_task(task: dict[str, Any]) -> None:
    """Cap the model/data size keys of a ``[task]`` table in place (see ``QUICK_TASK_CAPS``)."""
    defaults = _task_defaults(task.get("name"))
    for key, cap in QUICK_TASK_CAPS.items():
        value = task.get(key, defaults.get(key))
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            task[key] = cap
    n_embd, n_head = task.get("n_embd", defaults.get("n_embd")), task.get("n_head", defaults.get("n_head"))
    if isinstance(n_embd, int) and isinstance(n_head, int) and n_head > 0 and n_embd % n_head:
        task["n_head"] = max(d for d in range(1, n_head + 1) if n_embd % d == 0)  # keep heads dividing width


def merge_quick(raw: dict[str, Any]) -> dict[str, Any]:
    """``--quick``, first half: the file's ``[quick]`` table deep-merged over the rest of the file."""
    extra = raw.get("quick", {}) or {}
    if not isinstance(extra, dict):
        raise ConfigError("quick: must be a table of overrides used by --quick")
    return deep_merge({k: v for k, v in raw.items() if k != "quick"}, extra)


def shrink_quick(raw: dict[str, Any]) -> dict[str, Any]:
    """``--quick``, second half: cap steps, lr grids (2 points), seeds (2), warmup and the model size."""
    out = copy.deepcopy(raw)
    out["quick"] = True
    out["grad_accum"] = 1
    steps = out.get("steps", QUICK_MAX_STEPS)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        return out  # an invalid budget: derive nothing from it, so the parser blames `steps` itself
    out["steps"] = min(steps, QUICK_MAX_STEPS)
    eval_every = out.get("eval_every", 50)
    if isinstance(eval_every, int) and not isinstance(eval_every, bool) and eval_every >= 1:
        out["eval_every"] = max(1, min(eval_every, out["steps"] // 4 or 1))
    seeds = out.get("seeds", [0, 1])
    if isinstance(seeds, list):
        out["seeds"] = seeds[:QUICK_MAX_SEEDS]
    for opt in (out.get("optimizers") or {}).values():
        if isinstance(opt, dict) and isinstance(opt.get("lr_grid"), list):
            opt["lr_grid"] = _two_point(opt["lr_grid"])
    sched = out.get("schedule")
    if isinstance(sched, dict) and isinstance(sched.get("warmup"), int):
        sched["warmup"] = min(sched["warmup"], out["steps"] // 10)
    if isinstance(out.get("task"), dict):
        shrink_task(out["task"])
    return out


