"""Verdict rows and ``report.md`` of ``muonlab bench claims``.

One row per comparison: the paper, the claim, the task, our figure (the paired difference of final
validation loss ``A - B`` over the held-out seeds, with its 95% t interval) and the verdict of
:func:`muonlab.bench.stats.verdict`. A row also says when a best lr sits on the edge of its grid
(the optimum may lie outside it) and how many runs diverged. Below the table, per experiment: each
arm's best lr, grid and held-out mean with its interval, then the plots.

References:
    DESIGN.md "Benchmarks done honestly"; Student t intervals as in :mod:`muonlab.bench.stats`.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from pathlib import Path

from muonlab.bench.claims.run import ExperimentOutcome
from muonlab.bench.claims.spec import Claim, Comparison
from muonlab.bench.runner import environment
from muonlab.bench.stats import NOT_RESOLVED, Interval, mean_ci, paired_difference, verdict

SKIPPED = "skipped"


@dataclass
class Row:
    """One line of the claims table."""

    claim: Claim
    comparison: Comparison | None
    interval: Interval | None
    verdict: str
    notes: list[str]

    @property
    def label(self) -> str:
        return self.claim.statement if self.comparison is None else self.comparison.describe()


def evaluate(claim: Claim, outcomes: dict[str, ExperimentOutcome]) -> list[Row]:
    """The verdict rows of ``claim`` from the experiments' outcomes."""
    if claim.todo:
        return [Row(claim, None, None, SKIPPED, [claim.todo])]
    rows = []
    for comp in claim.comparisons:
        a, b = outcomes[comp.experiment].arms[comp.a], outcomes[comp.exp_b].arms[comp.b]
        skipped = [f"{r.arm.name}: {r.skipped}" for r in (a, b) if r.skipped]
        if skipped:
            rows.append(Row(claim, comp, None, SKIPPED, skipped))
            continue
        va, vb = a.values(comp.lr_mult, comp.at), b.values(comp.lr_mult, comp.at_of_b)
        va = {s: v for s, v in va.items() if math.isfinite(v)}
        vb = {s: v for s, v in vb.items() if math.isfinite(v)}
        notes = [f"lr optimum on the grid edge: {r.arm.name} ({r.best_lr:.3g})" for r in (a, b) if r.edge]
        # An anytime checkpoint is the evaluation nearest the fraction: say so when it is not exactly there.
        notes += [f"{r.arm.name} read at step {r.read_step(f)}, not {f * r.steps:g}" for r, f in
                  ((a, comp.at), (b, comp.at_of_b)) if f != 1.0 and r.read_step(f) not in (None, f * r.steps)]
        divs = [f"{r.arm.name} {r.n_diverged(comp.lr_mult)}/{len(r.values(comp.lr_mult))} diverged"
                for r in (a, b) if r.n_diverged(comp.lr_mult)]
        notes += divs
        if not set(va) & set(vb):
            rows.append(Row(claim, comp, None, NOT_RESOLVED, notes + ["no paired seeds"]))
            continue
        diff = paired_difference(va, vb)
        rows.append(Row(claim, comp, diff, verdict(diff), notes))
    return rows


def _figure(row: Row) -> str:
    d = row.interval
    if d is None:
        return "—"
    if d.n < 2 or not math.isfinite(d.lo):
        return f"{d.mean:+.4f} (n={d.n}, no interval)"
    return f"{d.mean:+.4f} [{d.lo:+.4f}, {d.hi:+.4f}] (n={d.n})"


def claims_table(rows: list[Row], outcomes: dict[str, ExperimentOutcome]) -> list[str]:
    """Markdown lines of the claims table."""
    lines = ["| paper | claim | task | A − B final val loss, mean [95% CI] (seeds) | verdict | notes |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        task = outcomes[r.comparison.experiment].experiment.name if r.comparison else "—"
        lines.append(f"| {r.claim.paper} | {r.label} | `{task}` | {_figure(r)} | **{r.verdict}** | "
                     f"{'; '.join(r.notes)} |")
    return lines


def arms_table(out: ExperimentOutcome) -> list[str]:
    """Markdown lines: every arm's grid, best lr and held-out final loss with its interval."""
    lines = ["| arm | optimizer | lr grid | best lr | final val loss, held-out seeds: mean [95% CI] | diverged |"
             " fixed hyperparameters |", "|---|---|---|---|---|---|---|"]
    for name, r in out.arms.items():
        if r.skipped:
            lines.append(f"| {name} | {r.arm.optimizer} | — | — | skipped: {r.skipped} | — | — |")
            continue
        finite = [v for v in r.heldout.values() if math.isfinite(v)]
        ci = str(mean_ci(finite)).replace("+", "") if finite else "—"
        grid = ", ".join(f"{x:.3g}" for x in r.grid) + (f" (+{r.extended} extended)" if r.extended else "")
        best = f"{r.best_lr:.3g}" + (" **edge**" if r.edge else "") if r.best_lr is not None else "—"
        hp = ", ".join(f"{k}={v}" for k, v in r.arm.hparams.items()) or "defaults"
        mult = "".join(f"; {k:g}x: {r.n_diverged(k)}/{len(v)}" for k, v in sorted(r.multiples.items()))
        lines.append(f"| {name} | {r.arm.optimizer} | {grid} | {best} | {ci} | {len(r.diverged)}/{len(r.heldout)}"
                     f"{mult} | {hp} |")
    return lines


def write_report(path: Path, rows: list[Row], outcomes: dict[str, ExperimentOutcome], plots: list[Path], *,
                 mode: str, command: str | None) -> Path:
    """Write ``report.md``: header, the claims table, then each experiment's arms and the plots."""
    env = environment()
    lines = [f"# Paper claims re-measured ({mode} run)", ""]
    if command:
        lines.append(f"Command: `{command}`  ")
    lines += [
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}  ",
        f"Machine: {env['machine']['platform']}, {env['machine']['processor']}, "
        f"{env['machine']['torch_threads']} torch threads  ",
        f"Versions: python {env['versions']['python']}, torch {env['versions']['torch']}, "
        f"muonlab {env['versions']['muonlab']}, git {env['git_commit'] or 'n/a'}", ""]
    if mode != "full":
        lines += [f"**This is a {mode} run** (a few steps of a tiny model, 2-point lr grids): it checks the pipeline; "
                  "its verdicts are not evidence about the papers.", ""]
    lines += [
        "Protocol: per experiment, every arm sweeps its lr grid on seed 0 (an optimum on the edge of a 3+ point "
        "grid extends the grid, full runs only), then reruns its best lr on the held-out seeds. The figure is the "
        "paired difference A − B of final validation loss over the held-out seeds (same initialisation and data "
        "order per seed), with its 95% Student t interval. Verdict for \"A < B\": **holds** if the whole interval "
        "is below 0, **does not hold** if it is above 0, **not resolved** if it contains 0. A diverged run scores "
        "its initial validation loss (no progress). Lower loss is better. A row that names a fraction of the budget "
        "reads that arm at the evaluation there instead of at the end (an anytime checkpoint); SF-NorMuon's anytime "
        "rows read its one run at 25/50/100% against AdamW's final loss in a run whose schedule ends there.", "",
        "## Claims", ""]
    claims = list(dict.fromkeys(r.claim for r in rows))
    lines += [f"- `{c.name}` ({c.paper}): {c.statement}" for c in claims] + [""]
    lines += claims_table(rows, outcomes)
    for name, out in outcomes.items():
        cfg = out.config
        lines += ["", f"## Experiment `{name}`", "", out.experiment.description + ".  "]
        if cfg is not None:
            lines += [f"Task `{cfg.task}` {cfg.task_config}; {cfg.steps} steps; schedule {cfg.schedule.kind} "
                      f"(warmup {cfg.schedule.warmup}); grad clip {cfg.grad_clip or 'off'}; seeds {cfg.seeds} "
                      f"(sweep on the first {cfg.sweep_seeds}, verdicts on {out.heldout_seeds}); runs in "
                      f"`{out.out_dir}`.", ""]
        lines += arms_table(out)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.relative_to(path.parent)})" for p in plots]
    lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
