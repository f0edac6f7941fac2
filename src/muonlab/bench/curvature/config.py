"""Configuration of ``python -m muonlab curvature``: dataclasses, TOML files, ``--set`` overrides.

The defaults are the full reproduction (about 6 minutes on 2 CPU cores); :func:`quick` shrinks it
to a smoke run of under 3 minutes. A TOML file may set any field, with one table per section::

    steps = 400
    [task]
    n_embd = 48
    [optimizers.muon]
    lr = 0.03
    [sweep]
    exponents = [0.0, 1.0]

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026)
    (the set-up; the sizes, budgets and learning rates here are muonlab's own choices for CPU scale).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from muonlab.bench.overrides import ConfigError, unknown_name

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]


def _gpt(**kw: Any) -> dict[str, Any]:
    base = dict(data="zipf-pcfg", n_layer=2, n_head=4, n_embd=64, block_size=64, batch_size=16,
                train_tokens=400_000, val_tokens=32_768, exponent=1.0, val_exponent=0.0, eval_batches=8)
    base.update(kw)
    return base


@dataclass
class ProbeConfig:
    """What :class:`~muonlab.bench.curvature.probe.CurvatureProbe` measures."""

    probe_batches: int = 1
    layer_split: bool = True
    current_batch: bool = False
    top_eig_iters: int = 0


@dataclass
class SweepConfig:
    """The imbalance study: trajectory-averaged NDS vs the Zipf exponent (validation at s = 0)."""

    enabled: bool = True
    exponents: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    steps: int = 300
    probe_every: int = 25
    seeds: list[int] = field(default_factory=lambda: [0, 1])


@dataclass
class StructureConfig:
    """Section-5 diagnostics on the attention matrices of a small Muon-trained GPT."""

    enabled: bool = True
    task: dict[str, Any] = field(default_factory=lambda: _gpt(n_layer=1, n_head=2, n_embd=16, block_size=32,
                                                              batch_size=8, train_tokens=200_000))
    steps: int = 300
    lr: float = 0.02
    adamw_lr: float = 3e-3
    matrices: list[str] = field(default_factory=lambda: ["c_q", "c_k", "c_v", "c_proj"])
    r: int = 4


@dataclass
class QuadraticConfig:
    """Section-5 stylized quadratic: GD vs Adam vs Muon with exact line search."""

    enabled: bool = True
    d: int = 32
    steps: int = 20
    rhos: list[float] = field(default_factory=lambda: [2.0, 10.0, 100.0, 1000.0])
    alphas: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.25, 0.4])
    sigma_ratios: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0, 10.0])
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    example: dict[str, float] = field(default_factory=lambda: {"d": 100, "alpha": 0.1, "rho": 100.0,
                                                               "sigma_ratio": 3.0})


@dataclass
class CurvatureConfig:
    """The whole experiment. ``optimizers`` maps registry name -> keyword hyperparameters (``lr`` included)."""

    name: str = "curvature"
    threads: int = 1
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    steps: int = 500
    probe_every: int = 25
    grad_clip: float = 1.0
    schedule: dict[str, Any] = field(default_factory=lambda: {"kind": "warmup_cosine", "warmup": 30,
                                                              "min_lr_ratio": 0.1})
    task: dict[str, Any] = field(default_factory=_gpt)
    # Muon's Newton–Schulz in fp32: the update the curvature probes measure carries no bf16 rounding, and
    # docs/curvature.md's figures were produced this way (ns_dtype "auto" would pick bf16 on AMX CPUs).
    optimizers: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "adamw": {"lr": 3e-3, "weight_decay": 0.0},
        "muon": {"lr": 0.02, "adamw_lr": 3e-3, "ns_dtype": "float32"},
    })
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    structure: StructureConfig = field(default_factory=StructureConfig)
    quadratic: QuadraticConfig = field(default_factory=QuadraticConfig)


def quick(cfg: CurvatureConfig) -> CurvatureConfig:
    """Shrink ``cfg`` to a smoke run (one seed, fewer steps, smaller sweeps) written to ``<name>-quick``."""
    cfg.name = f"{cfg.name}-quick"
    cfg.seeds = cfg.seeds[:1]
    cfg.sweep.seeds = cfg.sweep.seeds[:1]
    cfg.steps, cfg.probe_every = 200, 20
    cfg.task = {**cfg.task, "train_tokens": 150_000, "eval_batches": 4}
    cfg.sweep.steps, cfg.sweep.probe_every = 120, 30
    cfg.structure.steps = 100
    cfg.structure.task = {**cfg.structure.task, "n_embd": 8, "train_tokens": 60_000, "eval_batches": 2}
    cfg.structure.matrices = cfg.structure.matrices[:2]
    cfg.quadratic.rhos, cfg.quadratic.alphas = [10.0, 100.0], [0.1, 0.4]
    cfg.quadratic.sigma_ratios = [1.0, 3.0]
    return cfg


def _merge(obj: Any, data: dict[str, Any], where: str) -> None:
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{where}{key}: " + unknown_name("config key", key, names))
        cur = getattr(obj, key)
        if dataclasses.is_dataclass(cur):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key}: must be a table, got {value!r}")
            _merge(cur, value, f"{where}{key}.")
        elif isinstance(cur, dict) and isinstance(value, dict):
            merged = dict(cur)
            for k, v in value.items():
                merged[k] = {**merged[k], **v} if isinstance(merged.get(k), dict) and isinstance(v, dict) else v
            setattr(obj, key, merged)
        else:
            setattr(obj, key, value)


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def load_config(path: str | None = None, overrides: list[str] = (), *, quick_run: bool = False) -> CurvatureConfig:
    """Defaults, then the TOML file, then ``--quick``, then ``KEY=VALUE`` overrides (dotted keys).

    Raises:
        ConfigError: (a ``ValueError``) on a missing file, invalid TOML, an unknown key, a malformed
            override or any value :func:`muonlab.bench.curvature.checks.validate` rejects; the
            message starts with the key at fault.
    """
    from muonlab.bench.curvature.checks import check_types, validate

    cfg = CurvatureConfig()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {path!r}")
        try:
            raw = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        _merge(cfg, raw, "")
    if quick_run:
        check_types(cfg)  # quick() slices and merges the file's values: they must have the right kinds
        quick(cfg)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
            raise ConfigError(f"--set expects key=value with a dotted key, got {item!r}")
        nested: dict[str, Any] = {}
        cur = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = _parse_value(text.strip())
        _merge(cfg, nested, "")
    validate(cfg)
    return cfg
