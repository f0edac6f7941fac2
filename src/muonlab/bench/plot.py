"""PNG plots of an experiment (matplotlib, Agg backend: no display needed).

* ``val_loss.png``: validation loss vs step at each optimizer's best lr; line = mean over seeds,
  band = min..max over seeds; the target as a dashed line.
* ``lr_sensitivity.png``: final validation loss vs lr (log x), one line per optimizer, sweep seeds
  averaged; diverged points are drawn as crosses at the top of the axis.
* ``update_stats.png`` (only when ``UpdateStats`` was recorded): update RMS and singular-value
  ratio ``σ_max/σ_median`` of the hidden-matrix updates vs step, best lr, seed mean.

Every optimizer keeps one look across all plots (:func:`optimizer_style`, by its position in the
config): its own colour *and* its own line style and marker, so two optimizers whose curves lie on
top of each other (Muon and NorMuon on small models) both stay visible, also in grayscale.

References:
    matplotlib, https://matplotlib.org (``matplotlib.use("Agg")`` for file output).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from muonlab.bench.runner import load_run
from muonlab.bench.sweep import ExperimentResult, final_loss


# Tableau-10 colours and eight dash patterns: the first eight optimizers differ in both, and any two
# of the first 40 differ in at least one (10 and 8 are not coprime, so pairs repeat after lcm = 40).
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
          "tab:olive", "tab:cyan")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (1, 1)), (0, (4, 2, 1, 2, 1, 2, 1, 2)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def optimizer_style(index: int) -> dict[str, object]:
    """``color``, ``linestyle`` and ``marker`` of the ``index``-th optimizer (matplotlib keywords)."""
    return {"color": COLORS[index % len(COLORS)], "linestyle": LINESTYLES[index % len(LINESTYLES)],
            "marker": MARKERS[index % len(MARKERS)]}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curves(result: ExperimentResult, name: str, key: str) -> dict[int, list[float]]:
    """step -> values of ``key`` over the best-lr runs of optimizer ``name``."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for rec in result.runs:
        if rec.spec.optimizer != name or rec.spec.lr != result.best_lr[name]:
            continue
        for row in load_run(rec.path)[1]:
            if key in row and row[key] is not None and math.isfinite(row[key]):
                by_step[row["step"]].append(row[key])
    return dict(sorted(by_step.items()))


def _line_with_band(ax, curve: dict[int, list[float]], label: str, style: dict[str, object]) -> None:
    steps = list(curve)
    # About ten markers per line: enough to tell the lines apart where they overlap, not a clutter.
    ax.plot(steps, [sum(v) / len(v) for v in curve.values()], label=label, markevery=max(1, len(steps) // 10),
            markersize=4, linewidth=1.4, **style)
    ax.fill_between(steps, [min(v) for v in curve.values()], [max(v) for v in curve.values()], alpha=0.15,
                    color=style["color"])


def val_loss_figure(result: ExperimentResult):
    """The figure of :func:`plot_val_loss` (a ``matplotlib.figure.Figure``; the caller closes it)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    start = 0.3 * result.steps  # early steps dominate the full view; the ranking is decided later
    late_values: list[float] = []
    for i, opt in enumerate(result.config.optimizers):
        curve = _curves(result, opt.name, "val_loss")
        if not curve:
            continue
        style = optimizer_style(i)
        _line_with_band(axes[0], curve, f"{opt.name} (lr {result.best_lr[opt.name]:.3g})", style)
        late = {s: v for s, v in curve.items() if s >= start}
        if late:
            _line_with_band(axes[1], late, opt.name, style)
            late_values += [x for v in late.values() for x in v]
    for ax, title in zip(axes, ("validation loss (best lr)", "zoom: last 70% of the budget")):
        if result.target is not None:
            ax.axhline(result.target, color="black", linestyle=(0, (2, 4)), linewidth=1, label="target")
        ax.set(xlabel="step", ylabel="validation loss", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if late_values:  # zoom on the curves (a far-away target line must not stretch the axis)
        lo, hi = min(late_values), max(late_values)
        pad = 0.05 * (hi - lo or 1.0)
        axes[1].set_ylim(lo - pad, hi + pad)
    fig.suptitle(result.config.name)
    fig.tight_layout()
    return fig


def plot_val_loss(result: ExperimentResult, path: Path) -> Path:
    """Validation loss vs steps at the best lr, band over seeds; right panel zooms on the last 70%."""
    fig = val_loss_figure(result)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_lr_sensitivity(result: ExperimentResult, path: Path) -> Path:
    """Final validation loss vs lr, one line per optimizer; diverged points marked."""
    fig = lr_sensitivity_figure(result)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def lr_sensitivity_figure(result: ExperimentResult):
    """The figure of :func:`plot_lr_sensitivity` (the caller closes it)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    finite_all = [final_loss(r.summary) for r in result.runs if math.isfinite(final_loss(r.summary))]
    top = max(finite_all) if finite_all else 1.0
    for i, opt in enumerate(result.config.optimizers):
        lrs, losses, bad = [], [], []
        for lr in opt.lr_grid:
            vals = [final_loss(r.summary) for r in result.runs
                    if r.spec.optimizer == opt.name and r.spec.lr == lr and r.phase == "sweep"]
            finite = [v for v in vals if math.isfinite(v)]
            if finite:
                lrs.append(lr)
                losses.append(sum(finite) / len(finite))
            elif vals:
                bad.append(lr)
        style = optimizer_style(i)
        ax.plot(lrs, losses, label=opt.name, **style)
        if bad:
            ax.plot(bad, [top] * len(bad), marker="x", linestyle="none", color=style["color"])
    ax.set_xscale("log")
    ax.set(xlabel="learning rate (each optimizer in its own units)", ylabel="final validation loss",
           title=f"{result.config.name}: lr sensitivity (x = diverged)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_update_stats(result: ExperimentResult, path: Path) -> Path | None:
    """Update RMS and σ_max/σ_median traces, when the ``update_stats`` callback recorded them."""
    keys = [("update_rms", "update RMS"), ("update_sv_ratio", "σ_max / σ_median of the update")]
    data = {k: {o.name: _curves(result, o.name, k) for o in result.config.optimizers} for k, _ in keys}
    styles = {o.name: optimizer_style(i) for i, o in enumerate(result.config.optimizers)}
    if not any(c for per_opt in data.values() for c in per_opt.values()):
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (key, label) in zip(axes, keys):
        for name, curve in data[key].items():
            if curve:
                _line_with_band(ax, curve, name, styles[name])
        ax.set(xlabel="step", ylabel=label, title=label)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{result.config.name}: hidden-matrix updates (best lr)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def make_plots(result: ExperimentResult) -> list[Path]:
    """All plots for the experiment, written into ``result.out_dir``; returns their paths."""
    out = result.out_dir
    paths = [plot_val_loss(result, out / "val_loss.png"), plot_lr_sensitivity(result, out / "lr_sensitivity.png")]
    upd = plot_update_stats(result, out / "update_stats.png")
    if upd is not None:
        paths.append(upd)
    return paths
