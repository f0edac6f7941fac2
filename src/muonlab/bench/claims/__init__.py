"""``muonlab bench claims``: every paper's claim re-measured on its own kind of task, with verdicts.

Each claim (:data:`CLAIMS`) names comparisons "arm A reaches a lower final validation loss than arm B"
on experiments (:data:`EXPERIMENTS`) run with the ordinary bench machinery (``run_experiment``: lr
sweep per arm, best lr rerun on held-out seeds, resume). Claims that share an experiment share its
runs. The verdict of each comparison comes from the paired 95% t interval of ``A - B`` over the
held-out seeds (:mod:`muonlab.bench.stats`): holds / does not hold / not resolved.

Algorithm::

    for each experiment the requested claims need:
        sweep every arm's lr grid on the sweep seed (extend a grid whose optimum is on an edge)
        rerun each best lr on the held-out seeds; follow-arms at their reference's best lr
        runs at k x best lr where a claim asks for them (TrasMuon's 2x, 4x)
    for each comparison: d_s = loss_A(s) - loss_B(s) over held-out seeds s -> mean, 95% t interval
        holds if hi < 0; does not hold if lo > 0; not resolved otherwise
    write <out>/claims/report.md (one claims table) and the plots

From Python::

    from muonlab.bench.claims import run_claims
    result = run_claims(["normuon"], out="runs", mode="quick")
    result.report_path, [(r.label, r.verdict) for r in result.rows]

References:
    DESIGN.md "Benchmarks done honestly"; the papers are listed in :mod:`.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from muonlab.bench.claims.registry import CLAIMS, EXPERIMENTS, GROUPS, resolve_names
from muonlab.bench.claims.report import Row, evaluate, write_report
from muonlab.bench.claims.run import MODES, ExperimentOutcome, run_arms
from muonlab.bench.claims.spec import Arm, Claim, Comparison, Experiment

__all__ = ["CLAIMS", "EXPERIMENTS", "GROUPS", "Arm", "Claim", "ClaimsResult", "Comparison", "Experiment",
           "Row", "out_dir", "run_claims"]


@dataclass
class ClaimsResult:
    """What :func:`run_claims` produced."""

    rows: list[Row]
    outcomes: dict[str, ExperimentOutcome]
    out_dir: Path
    report_path: Path | None = None
    plots: list[Path] = field(default_factory=list)


def out_dir(out: str | Path, mode: str) -> Path:
    """``<out>/claims`` (full), ``<out>/claims-quick`` or ``<out>/claims-tiny``."""
    return Path(out) / ("claims" if mode == "full" else f"claims-{mode}")


def _plan(claims: list[Claim]) -> tuple[dict[str, set[str]], dict[str, dict[str, tuple[float, ...]]]]:
    """Per experiment: the arms the claims compare, and the lr multiples each arm needs."""
    arms: dict[str, set[str]] = {}
    mults: dict[str, dict[str, tuple[float, ...]]] = {}
    for claim in claims:
        for c in claim.comparisons:
            arms.setdefault(c.experiment, set()).add(c.a)
            arms.setdefault(c.exp_b, set()).add(c.b)
            if c.lr_mult != 1.0:
                for exp, name in ((c.experiment, c.a), (c.exp_b, c.b)):
                    per = mults.setdefault(exp, {})
                    per[name] = tuple(sorted(set(per.get(name, ())) | {c.lr_mult}))
    return arms, mults


def run_claims(names: list[str] | None = None, out: str | Path = "runs", *, mode: str = "full",
               progress: bool = False, plots: bool = True, command: str | None = None,
               log: Callable[[str], None] = lambda s: None) -> ClaimsResult:
    """Run the named claims (all by default) and write ``report.md`` and the plots.

    Args:
        names: claim names or groups (``"ablation"``); ``None`` = every claim.
        out: output root; everything goes to :func:`out_dir` ``(out, mode)``.
        mode: ``"full"``, ``"quick"`` (``--quick``: tiny models, few steps) or ``"tiny"`` (tests).
        progress: rich progress bars per experiment phase.
        plots: write the PNG plots.
        command: the command line, recorded in the report.
        log: called with one line per phase.

    Raises:
        ValueError: unknown claim name or mode.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    claims = [CLAIMS[n] for n in resolve_names(names)]
    root = out_dir(out, mode)
    root.mkdir(parents=True, exist_ok=True)
    arms, mults = _plan(claims)
    outcomes = {exp: run_arms(EXPERIMENTS[exp], arms[exp], mults.get(exp, {}), root, mode=mode, progress=progress,
                              log=log)
                for exp in EXPERIMENTS if exp in arms}
    rows = [row for claim in claims for row in evaluate(claim, outcomes)]
    result = ClaimsResult(rows, outcomes, root)
    if plots:
        result.plots = _make_plots(claims, rows, outcomes, root)
    result.report_path = write_report(root / "report.md", rows, outcomes, result.plots, mode=mode, command=command)
    return result


def _make_plots(claims: list[Claim], rows: list[Row], outcomes: dict[str, ExperimentOutcome],
                root: Path) -> list[Path]:
    from muonlab.bench.claims import plots as P

    fig_dir = root / "figures"
    fig_dir.mkdir(exist_ok=True)
    paths = []
    for claim in claims:
        paths.append(P.plot_differences(claim.name, [r for r in rows if r.claim is claim],
                                        fig_dir / f"{claim.name}_differences.png"))
        if "c_sweep" in claim.plots:
            for exp in claim.experiments():
                paths.append(P.plot_c_sweep(outcomes[exp], fig_dir / f"{claim.name}_c_sweep.png"))
        if "anytime" in claim.plots:
            paths.append(P.plot_anytime(claim, outcomes, fig_dir / f"{claim.name}_anytime.png"))
        if "lr_multiples" in claim.plots:
            arms = sorted({n for c in claim.comparisons for n in (c.a, c.b)})
            paths.append(P.plot_lr_multiples([outcomes[e] for e in claim.experiments()], arms,
                                             fig_dir / f"{claim.name}_lr_multiples.png"))
    for name, out in outcomes.items():
        paths.append(P.plot_curves(out, fig_dir / f"{name}_val_loss.png"))
        paths.append(P.plot_lr_sensitivity(out, fig_dir / f"{name}_lr_sensitivity.png"))
    return [p for p in paths if p is not None]
