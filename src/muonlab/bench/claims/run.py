"""Running the arms of a claims experiment with the ordinary bench machinery.

Each phase is one call of :func:`muonlab.bench.sweep.run_experiment` on a config built from the
experiment (``load_config`` on a dict, so ``--quick`` shrinks it exactly as it shrinks a TOML file),
with an optimizer registry that maps every arm name to its class. Finished runs are reused by the
runner's resume logic, so later phases never retrain what an earlier phase (or an earlier claim, or
an interrupted invocation) already ran:

1. **sweep** every swept arm on the sweep seed; in a full run, an arm whose best lr lies on the edge
   of its grid (3+ points) gets one more grid point beyond that edge, up to :data:`MAX_EXTEND` times;
   an optimum still on the edge is flagged in the report;
2. **seeds**: the best lr of every swept arm on the other seeds (the held-out seeds of the verdicts);
3. **follow**: arms with ``follow`` run at that arm's best lr on every seed;
4. **multiples**: arms that a claim tests at ``k x`` their best lr run there on the held-out seeds
   (for hybrids only the orthogonalized part's lr is multiplied; the AdamW part stays at AdamW's
   best lr).

A diverged run scores the validation loss of its initial model ("no progress"), so paired
differences stay finite; the report also counts divergences.

References:
    DESIGN.md "Benchmarks done honestly"; AlgoPerf (arXiv 2306.07179).
"""

from __future__ import annotations

import copy
import inspect
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from muonlab.bench.claims.spec import Arm, Experiment
from muonlab.bench.config import ExperimentConfig, load_config
from muonlab.bench.overrides import deep_merge
from muonlab.bench.runner import load_run
from muonlab.bench.sweep import RunRecord, final_loss, run_experiment
from muonlab.bench.validate import default_optimizers, resolve_refs

MODES = ("full", "quick", "tiny")
MAX_EXTEND = 2          # grid extensions per arm when its best lr lies on an edge (full runs only)
QUICK_SEEDS = 3         # --quick keeps 3 seeds: the sweep seed + 2 held out (the bench's --quick keeps 2)


@dataclass
class ArmResult:
    """What one arm produced in one experiment."""

    arm: Arm
    skipped: str | None = None
    steps: int = 0                                              # the experiment's step budget
    grid: list[float] = field(default_factory=list)
    best_lr: float | None = None
    edge: bool = False                                          # best lr on the edge of a 3+ point grid
    extended: int = 0                                           # grid points added beyond an edge
    sweep: dict[float, float] = field(default_factory=dict)     # lr -> final loss on the sweep seed(s)
    heldout: dict[int, float] = field(default_factory=dict)     # seed -> final loss at the best lr
    diverged: list[int] = field(default_factory=list)           # held-out seeds that diverged at the best lr
    multiples: dict[float, dict[int, float]] = field(default_factory=dict)   # k -> seed -> loss at k x best
    multiples_diverged: dict[float, list[int]] = field(default_factory=dict)
    curve: dict[int, float] = field(default_factory=dict)       # step -> mean val loss (held-out seeds, best lr)
    curves: dict[int, dict[int, float]] = field(default_factory=dict)  # seed -> step -> val loss (held-out, best lr)

    def values(self, mult: float = 1.0, at: float = 1.0) -> dict[int, float]:
        """seed -> loss at ``mult`` x best lr; ``at < 1``: the val loss of the evaluation nearest ``at`` x budget."""
        if at != 1.0:
            target, out = at * self.steps, {}
            for seed, c in self.curves.items():
                if seed in self.diverged and target > max(c, default=0):
                    out[seed] = self.heldout[seed]  # diverged before the checkpoint: no progress
                elif c:
                    out[seed] = c[min(c, key=lambda step: abs(step - target))]
            return out
        return self.heldout if mult == 1.0 else self.multiples.get(mult, {})

    def read_step(self, at: float) -> int | None:
        """The step whose evaluation :meth:`values` reads at ``at`` x budget (``None``: no curve)."""
        if at == 1.0:
            return self.steps
        steps = sorted({s for c in self.curves.values() for s in c})
        return min(steps, key=lambda step: abs(step - at * self.steps)) if steps else None

    def n_diverged(self, mult: float = 1.0) -> int:
        return len(self.diverged if mult == 1.0 else self.multiples_diverged.get(mult, []))


@dataclass
class ExperimentOutcome:
    """The arms of one experiment after all phases."""

    experiment: Experiment
    config: ExperimentConfig | None     # the seeds phase's config (None when every arm was skipped)
    out_dir: Path
    heldout_seeds: list[int]
    arms: dict[str, ArmResult]


def skip_reason(arm: Arm, registry: dict[str, type]) -> str | None:
    """Why ``arm`` cannot run in this version (unregistered optimizer, missing option), or ``None``."""
    if arm.optimizer not in registry:
        return f"optimizer {arm.optimizer!r} is not registered in this version"
    params = inspect.signature(registry[arm.optimizer].__init__).parameters
    missing = [k for k in arm.needs if k not in params]
    if missing:
        return f"{registry[arm.optimizer].__name__} has no {missing[0]!r} option in this version"
    return None


ADAM_FAMILY = ("adamw", "adam-single-beta")  # optimizers that orthogonalize nothing


def hidden_matrices(cfg: ExperimentConfig) -> int:
    """How many parameters of the experiment's model ``muonlab.param_groups`` routes to the orthogonal part."""
    import warnings

    import muonlab
    from muonlab.bench.validate import make_task

    model = make_task(cfg).make_model(cfg.seeds[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bench itself shows routing warnings once per run
        groups = muonlab.param_groups(model)
    return sum(len(g["params"]) for g in groups if g.get("algorithm") == "orthogonal")


def needed_arms(exp: Experiment, names: set[str]) -> list[Arm]:
    """The named arms and everything they depend on, in the experiment's order."""
    todo, need = list(names), set()
    while todo:
        name = todo.pop()
        if name not in need:
            need.add(name)
            todo += exp.arm(name).depends_on()
    return [a for a in exp.arms if a.name in need]


def _config(exp: Experiment, entries: list[tuple[Arm, list[float], dict[str, Any]]], mode: str,
            seeds: list[int], sweep_seeds: int) -> ExperimentConfig:
    raw = {k: copy.deepcopy(v) for k, v in exp.base.items()}
    raw["name"] = exp.name
    raw["optimizers"] = {a.name: {"lr_grid": list(grid), **hp} for a, grid, hp in entries}
    if mode != "full":
        raw["quick"] = deep_merge(exp.quick, exp.tiny) if mode == "tiny" else copy.deepcopy(exp.quick)
    cfg = load_config(raw, quick=mode != "full")
    cfg.name, cfg.seeds, cfg.sweep_seeds = exp.name, list(seeds), sweep_seeds  # claims/<exp>/ either way
    return cfg


def _extend(grid: list[float], best: float) -> list[float]:
    """One more point beyond the edge where ``best`` lies, at the grid's own ratio there."""
    if best == max(grid):
        return grid + [float(f"{grid[-1] * grid[-1] / grid[-2]:.3g}")]
    return [float(f"{grid[0] * grid[0] / grid[1]:.3g}")] + grid


def score(rec: RunRecord) -> tuple[float, bool]:
    """``(final val loss, diverged)``; a diverged run scores its initial model's val loss (no progress)."""
    loss = final_loss(rec.summary)
    if math.isfinite(loss):
        return loss, False
    rows = load_run(rec.path)[1] if rec.path.is_file() else []
    first = next((r for r in rows if r.get("step") == 0 and "val_loss" in r), None)
    return (float(first["val_loss"]) if first else math.nan), True


def _seed_curve(rec: RunRecord, initial: float) -> dict[int, float]:
    """step -> val loss of one run; after a divergence every later evaluation scores ``initial``."""
    rows = load_run(rec.path)[1] if rec.path.is_file() else []
    curve = {r["step"]: r["val_loss"] for r in rows if r.get("val_loss") is not None}
    return {s: (v if math.isfinite(v) else initial) for s, v in sorted(curve.items())}


def _mean_curve(curves: list[dict[int, float]]) -> dict[int, float]:
    by_step: dict[int, list[float]] = {}
    for c in curves:
        for s, v in c.items():
            by_step.setdefault(s, []).append(v)
    return {s: statistics.fmean(v) for s, v in sorted(by_step.items())}


def run_arms(exp: Experiment, names: set[str], multiples: dict[str, tuple[float, ...]], root: Path, *,
             mode: str = "full", progress: bool = False,
             log: Callable[[str], None] = lambda s: None) -> ExperimentOutcome:
    """Run the phases for the named arms of ``exp`` (and their dependencies) under ``root/<exp>/``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    registry = default_optimizers()
    arms = needed_arms(exp, names)
    results = {a.name: ArmResult(a) for a in arms}
    for a in arms:  # in order, so a dependency is decided before its dependents
        dep = next((d for d in a.depends_on() if results[d].skipped), None)
        results[a.name].skipped = skip_reason(a, registry) or (f"depends on {dep!r}, skipped" if dep else None)
    ortho = [a for a in arms if not results[a.name].skipped and a.optimizer not in ADAM_FAMILY]
    seeds0 = list(exp.base["seeds"])[:1]
    if ortho and hidden_matrices(_config(exp, [(ortho[0], list(ortho[0].lr_grid) or [1.0], {})], mode, seeds0, 1)) == 0:
        for a in ortho:  # every parameter would train with the AdamW part: a Muon-family figure would be AdamW's
            results[a.name].skipped = (f"muonlab.param_groups routes no parameter of the {exp.base['task']['name']!r} "
                                       "model to the orthogonalized part (it would train as AdamW)")
    live = [a for a in arms if not results[a.name].skipped]
    alias = {a.name: registry[a.optimizer] for a in live}
    swept, followers = [a for a in live if a.follow is None], [a for a in live if a.follow]
    seeds = list(exp.base["seeds"]) if mode == "full" else list(exp.base["seeds"])[:QUICK_SEEDS]
    n_sweep = int(exp.base.get("sweep_seeds", 1))
    heldout = seeds[n_sweep:]
    grids = {a.name: list(a.lr_grid) for a in swept}

    def go(entries, run_seeds, sweep_seeds, phase):
        cfg = _config(exp, entries, mode, run_seeds, sweep_seeds)
        log(f"{exp.name}: {phase}: {', '.join(o.name for o in cfg.optimizers)}")
        return cfg, run_experiment(cfg, root, optimizers=alias, report=False, progress=progress)

    while swept:  # 1. sweep (and extend grids whose optimum is on an edge)
        cfg, res = go([(a, grids[a.name], a.hparams) for a in swept], seeds[:n_sweep], n_sweep, "sweep")
        edge = [o for o in cfg.optimizers if mode == "full" and len(o.lr_grid) >= 3
                and res.best_lr[o.name] in (min(o.lr_grid), max(o.lr_grid)) and results[o.name].extended < MAX_EXTEND]
        if not edge:
            break
        for o in edge:
            grids[o.name] = _extend(o.lr_grid, res.best_lr[o.name])
            results[o.name].extended += 1
            log(f"{exp.name}: {o.name}: best lr {res.best_lr[o.name]:.3g} on the grid edge, grid -> {grids[o.name]}")
    records: list[RunRecord] = []
    best: dict[str, float] = {}
    cfg = None
    if swept:  # 2. the best lr on the held-out seeds
        cfg, res = go([(a, grids[a.name], a.hparams) for a in swept], seeds, n_sweep, "seeds")
        records += res.runs
        best.update(res.best_lr)
        for o in cfg.optimizers:
            r = results[o.name]
            r.grid, r.best_lr = list(o.lr_grid), best[o.name]
            r.edge = len(o.lr_grid) >= 3 and r.best_lr in (min(o.lr_grid), max(o.lr_grid))
    if followers:  # 3. arms that take another arm's best lr
        _, res = go([(a, [best[a.follow]], resolve_refs(a.hparams, best)) for a in followers], seeds, n_sweep,
                    "follow")
        records += res.runs
        for a in followers:
            results[a.name].grid, results[a.name].best_lr = [best[a.follow]], best[a.follow]
    mult_arms = [a for a in live if multiples.get(a.name) and a.name in best]
    if mult_arms and heldout:  # 4. k x best lr on the held-out seeds
        _, res = go([(a, [k * best[a.name] for k in multiples[a.name]], resolve_refs(a.hparams, best))
                     for a in mult_arms], heldout, len(heldout), "lr multiples")
        for a in mult_arms:
            r = results[a.name]
            for k in multiples[a.name]:
                lr = k * best[a.name]
                for rec in res.runs:
                    if rec.spec.optimizer == a.name and rec.spec.lr == lr:
                        value, div = score(rec)
                        r.multiples.setdefault(k, {})[rec.spec.seed] = value
                        if div:
                            r.multiples_diverged.setdefault(k, []).append(rec.spec.seed)
    for name, r in results.items():
        if r.skipped or r.best_lr is None:
            continue
        r.steps = cfg.steps if cfg is not None and cfg.steps else 0
        mine = [rec for rec in records if rec.spec.optimizer == name]
        for lr in r.grid:
            vals = [final_loss(rec.summary) for rec in mine if rec.spec.lr == lr and rec.spec.seed in seeds[:n_sweep]]
            if vals:
                r.sweep[lr] = statistics.fmean(vals)
        at_best = [rec for rec in mine if rec.spec.lr == r.best_lr and rec.spec.seed in heldout]
        for rec in at_best:
            value, div = score(rec)
            r.heldout[rec.spec.seed] = value
            r.curves[rec.spec.seed] = _seed_curve(rec, value)
            if div:
                r.diverged.append(rec.spec.seed)
        r.curve = _mean_curve([c for s, c in r.curves.items() if s not in r.diverged])
    return ExperimentOutcome(exp, cfg, root / exp.name, heldout, results)
