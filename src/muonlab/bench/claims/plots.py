"""PNG plots of ``muonlab bench claims`` (matplotlib, Agg backend).

* ``<claim>_differences.png``: every comparison of a claim as its paired difference ``A - B`` with
  the 95% interval (a forest plot); green = holds, red = does not hold, grey = not resolved.
* ``<experiment>_val_loss.png``: validation loss vs step at each arm's best lr (mean of the
  held-out seeds); ``<experiment>_lr_sensitivity.png``: final loss vs lr on the sweep seed.
* ``namo_c_sweep.png``: NAMO-D's final loss vs its clamp ``c`` (log x), NAMO as a reference band.
* ``trasmuon_lr_multiples.png``: final loss vs lr multiple of the best lr, with and without warmup,
  each point labelled with its fraction of diverged runs.
* ``sf-normuon_anytime.png``: the one schedule-free run's validation loss vs step (held-out mean) and,
  at each checkpoint, the baseline it is compared with there (mean and 95% interval; AdamW tuned per
  horizon), with each baseline's own curve.

References:
    matplotlib, https://matplotlib.org.
"""

from __future__ import annotations

import math
from pathlib import Path

from muonlab.bench.claims.report import Row
from muonlab.bench.claims.run import ArmResult, ExperimentOutcome
from muonlab.bench.claims.spec import Claim
from muonlab.bench.stats import DOES_NOT_HOLD, HOLDS, mean_ci

COLORS = {HOLDS: "tab:green", DOES_NOT_HOLD: "tab:red"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ci(values: dict[int, float]) -> tuple[float, float]:
    """(mean, half width) of the finite values; half width 0 when fewer than two."""
    finite = [v for v in values.values() if math.isfinite(v)]
    if not finite:
        return math.nan, 0.0
    ci = mean_ci(finite)
    return ci.mean, (ci.half_width if ci.n > 1 else 0.0)


def plot_differences(name: str, rows: list[Row], path: Path) -> Path | None:
    """Forest plot of the claim's paired differences."""
    rows = [r for r in rows if r.interval is not None]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    for i, r in enumerate(rows):
        d = r.interval
        err = [[d.mean - d.lo], [d.hi - d.mean]] if math.isfinite(d.lo) else None
        ax.errorbar([d.mean], [i], xerr=err, fmt="o", color=COLORS.get(r.verdict, "tab:gray"), capsize=3)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [f"{r.label} ({r.comparison.experiment})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="A − B final val loss (< 0: A better), 95% t interval", title=name)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(out: ExperimentOutcome, path: Path) -> Path | None:
    """Validation loss vs step of every arm at its best lr (held-out seed mean)."""
    arms = [r for r in out.arms.values() if r.curve]
    if not arms:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    late = []
    for r in arms:
        ax.plot(list(r.curve), list(r.curve.values()), label=f"{r.arm.name} (lr {r.best_lr:.3g})", linewidth=1.2)
        steps = list(r.curve)
        late += [v for s, v in r.curve.items() if s >= 0.3 * steps[-1]]
    if late:
        lo, hi = min(late), max(late)
        ax.set_ylim(lo - 0.05 * (hi - lo or 1), hi + 0.05 * (hi - lo or 1))
    ax.set(xlabel="step", ylabel="validation loss (zoom: last 70%)", title=f"{out.experiment.name}: best lr")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_lr_sensitivity(out: ExperimentOutcome, path: Path) -> Path | None:
    """Final loss vs lr on the sweep seed; crosses on the top edge for diverged points."""
    arms = [r for r in out.arms.values() if len(r.sweep) > 1]
    if not arms:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    finite = [v for r in arms for v in r.sweep.values() if math.isfinite(v)]
    top = max(finite) if finite else 1.0
    for r in arms:
        ok = {lr: v for lr, v in sorted(r.sweep.items()) if math.isfinite(v)}
        (line,) = ax.plot(list(ok), list(ok.values()), marker="o", label=r.arm.name, linewidth=1)
        bad = [lr for lr, v in r.sweep.items() if not math.isfinite(v)]
        if bad:
            ax.plot(bad, [top] * len(bad), "x", color=line.get_color())
    ax.set_xscale("log")
    ax.set(xlabel="lr (each optimizer in its own units)", ylabel="final validation loss (sweep seed)",
           title=f"{out.experiment.name}: lr sensitivity (x = diverged)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_c_sweep(out: ExperimentOutcome, path: Path, prefix: str = "namo-d.c") -> Path | None:
    """NAMO-D's held-out final loss vs ``c``, NAMO's mean ± interval as a band."""
    points = sorted((float(n[len(prefix):]), r) for n, r in out.arms.items()
                    if n.startswith(prefix) and not r.skipped and r.heldout)
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    means = [_ci(r.heldout) for _, r in points]
    ax.errorbar([c for c, _ in points], [m for m, _ in means], yerr=[h for _, h in means], marker="o", capsize=3,
                label="NAMO-D (each c at its own best lr)")
    namo: ArmResult | None = out.arms.get("namo")
    if namo is not None and namo.heldout:
        m, h = _ci(namo.heldout)
        ax.axhspan(m - h, m + h, color="tab:orange", alpha=0.25)
        ax.axhline(m, color="tab:orange", label="NAMO")
    ax.set_xscale("log")
    ax.set(xlabel="NAMO-D clamp c", ylabel="final validation loss (held-out seeds, 95% CI)",
           title=f"{out.experiment.name}: NAMO-D's c")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_lr_multiples(outs: list[ExperimentOutcome], arms: list[str], path: Path) -> Path | None:
    """Final loss vs lr multiple (1x, 2x, 4x best lr), one panel per experiment, diverged fractions."""
    outs = [o for o in outs if any(o.arms.get(a) and o.arms[a].multiples for a in arms)]
    if not outs:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(outs), figsize=(6 * len(outs), 4.2), squeeze=False)
    for ax, out in zip(axes[0], outs):
        for name in arms:
            r = out.arms.get(name)
            if r is None or r.skipped or not r.heldout:
                continue
            ks = [1.0] + sorted(r.multiples)
            stats = [_ci(r.values(k)) for k in ks]
            ax.errorbar(ks, [m for m, _ in stats], yerr=[h for _, h in stats], marker="o", capsize=3, label=name)
            for k, (m, _) in zip(ks, stats):
                n_div = r.n_diverged(k)
                if n_div and math.isfinite(m):
                    ax.annotate(f"{n_div}/{len(r.values(k))} div", (k, m), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
        ax.set_xscale("log", base=2)
        ax.set(xlabel="lr / best lr", ylabel="final validation loss (diverged = initial loss)",
               title=out.experiment.name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_anytime(claim: Claim, outcomes: dict[str, ExperimentOutcome], path: Path) -> Path | None:
    """A's curve, and each compared B (``at_b`` given) read where the claim reads it, at A's checkpoint step."""
    comps = [c for c in claim.comparisons if c.at_b is not None]  # the ones that name where B is read
    if not comps:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn: set[tuple[str, str]] = set()
    shown: list[float] = []  # the y values the zoom must keep in view
    for c in comps:
        a, b = outcomes[c.experiment].arms[c.a], outcomes[c.exp_b].arms[c.b]
        if (c.experiment, c.a) not in drawn and a.curve:
            ax.plot(list(a.curve), list(a.curve.values()), color="tab:blue", linewidth=1.6,
                    label=f"{c.a} ({c.experiment}, one run, lr {a.best_lr:.3g})")
            drawn.add((c.experiment, c.a))
            shown += [v for s, v in a.curve.items() if s >= 0.15 * max(a.curve)]
        step = a.read_step(c.at)
        m, h = _ci(b.values(c.lr_mult, c.at_of_b)) if not b.skipped else (math.nan, 0.0)
        if step is None or not math.isfinite(m):
            continue
        if b.curve:
            ax.plot(list(b.curve), list(b.curve.values()), color="tab:orange", linewidth=0.8, alpha=0.6)
        ax.errorbar([step], [m], yerr=[h], fmt="s", color="tab:orange", capsize=3,
                    label=f"{c.b}, a run per horizon (lr tuned there)" if c is comps[0] else None)
        am, ah = _ci(a.values(c.lr_mult, c.at))
        ax.errorbar([step], [am], yerr=[ah], fmt="o", color="tab:blue", capsize=3)
        shown += [m - h, m + h]
    if shown:
        lo, hi = min(shown), max(shown)
        ax.set_ylim(lo - 0.1 * (hi - lo or 1), hi + 0.1 * (hi - lo or 1))
    ax.set(xlabel="step", ylabel="validation loss (held-out seeds, 95% CI at the checkpoints)",
           title=f"{claim.name}: one run read at several horizons vs a run per horizon")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
