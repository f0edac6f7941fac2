"""The data model of ``muonlab bench claims``: arms, experiments, comparisons and claims.

* An **arm** is one optimizer configuration inside an experiment: a registered optimizer, its fixed
  hyperparameters and its lr grid. Several arms may share one optimizer class (``namo-d`` with three
  values of ``c``); the arm's name is what the run records carry (``namo-d.c0.01-lr0.1-s1-<hash>``).
* An **experiment** is a task, budget, schedule and seed list in the ordinary bench schema
  (``docs/bench.md``), plus the arms that may run on it. Claims that name the same experiment share
  its runs: AdamW and Muon on text are trained once for the NAMO, NorMuon and AdaMuon claims.
* A **comparison** is "arm ``a`` reaches a lower final validation loss than arm ``b``" on one
  experiment, each at its own best lr times ``lr_mult``; it is decided by the paired interval of
  ``a - b`` over the held-out seeds (:mod:`muonlab.bench.stats`).
* A **claim** is a paper's statement and the comparisons that test it.

References:
    AlgoPerf (Dahl et al., arXiv 2306.07179): workloads kept apart from the algorithms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Arm:
    """One optimizer configuration of an experiment.

    Attributes:
        name: unique within the experiment; ``"adamw"`` is reserved for the plain AdamW baseline
            (built on ``model.parameters()``, as in every bench config).
        optimizer: the registered optimizer (``muonlab.optimizers()`` key).
        lr_grid: learning rates swept on the sweep seed (in the optimizer's own units).
        hparams: fixed keyword arguments; ``"best:<arm>"`` is that arm's best lr in the experiment.
        follow: run at this arm's best lr only (a one-point grid) instead of sweeping; for arms that
            change nothing the lr depends on and are slow here (bf16 Newton–Schulz on a CPU without
            native bf16).
        needs: constructor keywords the arm requires; when the installed class lacks one, the arm is
            skipped with a message instead of failing.
    """

    name: str
    optimizer: str
    lr_grid: tuple[float, ...] = ()
    hparams: dict[str, Any] = field(default_factory=dict)
    follow: str | None = None
    needs: tuple[str, ...] = ()
    label: str = ""

    def depends_on(self) -> list[str]:
        """Arms whose best lr this arm uses (``follow`` and ``"best:<arm>"`` values)."""
        deps = [v[5:] for v in self.hparams.values() if isinstance(v, str) and v.startswith("best:")]
        return deps + ([self.follow] if self.follow else [])


@dataclass(frozen=True)
class Experiment:
    """A task, budget and seed list (bench schema, without ``optimizers``) and its arms.

    ``base`` holds the keys of an ordinary experiment file (``task``, ``steps``, ``schedule``,
    ``seeds``, ``sweep_seeds``, ...); ``quick`` is its ``[quick]`` table (deep-merged by ``--quick``);
    ``tiny`` is merged on top of ``quick`` for the internal test size.
    """

    name: str
    description: str
    base: dict[str, Any]
    arms: tuple[Arm, ...]
    quick: dict[str, Any] = field(default_factory=dict)
    tiny: dict[str, Any] = field(default_factory=dict)

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(f"experiment {self.name!r} has no arm {name!r} (arms: {[a.name for a in self.arms]})")


@dataclass(frozen=True)
class Comparison:
    """"``a`` has a lower validation loss than ``b``" at ``lr_mult`` x each one's best lr.

    ``a`` runs in ``experiment``, ``b`` in ``experiment_b`` (default: the same). Experiments that differ
    only in their schedule or budget still pair by seed (same initialisation and data order: a task's
    batches depend on the seed only, so a 75-step run sees the first 75 batches of the 300-step one).
    ``at`` is the fraction of the budget where the losses are read (1.0: the final evaluation; 0.5:
    the evaluation nearest the middle of the run, an "anytime" checkpoint); ``at_b`` is ``b``'s, when it
    differs (``None``: the same as ``at``). SF-NorMuon's anytime test reads one run at 25% of its
    budget (``at=0.25``) against AdamW's final loss (``at_b=1.0``) in a run whose schedule ends there.
    """

    experiment: str
    a: str
    b: str
    lr_mult: float = 1.0
    label: str = ""
    experiment_b: str | None = None
    at: float = 1.0
    at_b: float | None = None

    @property
    def exp_b(self) -> str:
        return self.experiment_b or self.experiment

    @property
    def at_of_b(self) -> float:
        return self.at if self.at_b is None else self.at_b

    def describe(self) -> str:
        """``"a < b [(experiment_b)] [at k x best lr] [at f of the budget]"`` (or the explicit label)."""
        if self.label:
            return self.label
        b = self.b if self.exp_b == self.experiment else f"{self.b} ({self.exp_b})"
        mult = "" if self.lr_mult == 1.0 else f" at {self.lr_mult:g}x best lr"
        pct = lambda f: "" if f == 1.0 else f" at {f:.0%} of the budget"  # noqa: E731
        if self.at_of_b == self.at:
            return f"{self.a} < {b}{mult}{pct(self.at)}"
        return f"{self.a}{pct(self.at)} < {b}{pct(self.at_of_b) or ' (final)'}{mult}"


@dataclass(frozen=True)
class Claim:
    """A paper's claim and the comparisons that test it (``todo``: not testable in this version)."""

    name: str
    paper: str
    statement: str
    comparisons: tuple[Comparison, ...] = ()
    lr_multiples: tuple[float, ...] = ()       # extra runs at k x best lr for the arms compared there
    plots: tuple[str, ...] = ()                # extra plot kinds: "c_sweep", "lr_multiples"
    todo: str | None = None

    def experiments(self) -> list[str]:
        seen: list[str] = []
        for c in self.comparisons:
            for e in (c.experiment, c.exp_b):
                if e not in seen:
                    seen.append(e)
        return seen
