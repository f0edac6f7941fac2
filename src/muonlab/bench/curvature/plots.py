"""Figures of the curvature report (matplotlib, Agg backend, small PNGs).

Each optimizer keeps one look in every figure (:func:`looks`): its colour (AdamW orange and Muon
blue, as in the shipped figures; the others from the Tableau palette) and its marker, plus its own
line style in the panels where line style does not already encode a quantity (solid / dashed for
all parameters / hidden matrices, realized / predicted), so curves that coincide stay visible.

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026):
    Figure 1 (Taylor split vs validation loss), Figure 2 (Adam/Muon ratios), the Zipf-PCFG
    imbalance figure, the within/cross-layer figure and Figure 7 (quadratic).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

COLORS = {"adamw": "tab:orange", "muon": "tab:blue", "gd": "tab:gray", "adam": "tab:orange"}


def looks(names: list[str]) -> dict[str, dict[str, Any]]:
    """Per name: ``color`` (fixed for the names in :data:`COLORS`, else the next unused palette
    colour), ``marker`` and ``linestyle`` (by position, from :func:`muonlab.bench.plot.optimizer_style`)."""
    from muonlab.bench.plot import COLORS as PALETTE, optimizer_style

    used = {COLORS[n] for n in names if n in COLORS}
    free = [c for c in PALETTE if c not in used] or list(PALETTE)
    out, k = {}, 0
    for i, name in enumerate(names):
        style = optimizer_style(i)
        if name in COLORS:
            style["color"] = COLORS[name]
        else:
            style["color"], k = free[k % len(free)], k + 1
        out[name] = style
    return out


def _mark(look: dict[str, Any], n: int) -> dict[str, Any]:
    """Colour and marker of a look, markers on about eight of the ``n`` points."""
    return {"color": look["color"], "marker": look["marker"], "markevery": max(1, n // 8), "markersize": 3.5}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(rows: list[dict], key: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
    pts = [(r[x], r[key]) for r in rows if key in r and x in r]
    return (np.array([p[0] for p in pts], float), np.array([p[1] for p in pts], float)) if pts else (np.array([]),) * 2


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path


def nds_vs_step(main: dict[str, list[list[dict]]], path: Path) -> Path:
    """NDS along the full update (solid) and along its hidden-matrix part (dashed), per optimizer."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    look = looks(list(main))
    for opt, runs in main.items():
        for i, rows in enumerate(runs):
            for key, style in (("curv/nds", "-"), ("curv/nds_hidden", "--")):
                x, y = _series(rows, key)
                label = f"{opt} ({'all params' if style == '-' else 'hidden matrices'})" if i == 0 else None
                ax.plot(x, y, linestyle=style, alpha=0.8, label=label, **_mark(look[opt], len(x)))
    ax.set(xlabel="step", ylabel="NDS = uᵀHu / ‖u‖²", title="NDS along each optimizer's update")
    ax.set_yscale("symlog", linthresh=1e-2)  # NDS can be negative: log scale above 1e-2, linear below
    ax.legend(fontsize=7)
    return _save(fig, path)


def _running_min_val(rows: list[dict]) -> list[dict]:
    """Rows with ``val_loss`` replaced by its running minimum (the matched-loss x-axis)."""
    best, out = float("inf"), []
    for r in rows:
        if "val_loss" in r:
            best = min(best, r["val_loss"])
            r = {**r, "val_loss": best}
        out.append(r)
    return out


def taylor_vs_val_loss(main: dict[str, list[list[dict]]], path: Path) -> Path:
    """Figure-1 style: realized vs predicted decrease, first-order gain, curvature penalty vs val loss."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    look = looks(list(main))
    for opt, runs in main.items():
        for i, rows in enumerate(runs):
            lab = opt if i == 0 else None
            rows = _running_min_val(rows)
            x, real = _series(rows, "curv/realized", "val_loss")
            _, pred = _series(rows, "curv/predicted", "val_loss")
            mark = _mark(look[opt], len(x))
            axes[0].plot(x, -real, linestyle="-", label=f"{opt} realized" if lab else None, **mark)
            axes[0].plot(x, -pred, linestyle=":", label=f"{opt} predicted" if lab else None, **mark)
            for ax, key in ((axes[1], "curv/first_order"), (axes[2], "curv/curvature_penalty")):
                x, y = _series(rows, key, "val_loss")
                ax.plot(x, y, linestyle=look[opt]["linestyle"], label=lab, **_mark(look[opt], len(x)))
    titles = ("(a) one-step loss decrease", "(b) first-order gain gᵀu", "(c) curvature penalty ½uᵀHu")
    for ax, t in zip(axes, titles):
        ax.set(xlabel="validation loss (running min)", title=t)
        ax.invert_xaxis()
        ax.legend(fontsize=7)
    axes[2].set_yscale("log")
    return _save(fig, path)


def ratios(match: dict[str, Any], path: Path, names: tuple[str, str]) -> Path:
    """Adam/Muon ratios at matched validation loss: curvature penalty, NDS, squared update norm."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    labels = {"curv/curvature_penalty": "curvature penalty", "curv/nds": "NDS", "curv/u_norm_sq": "‖u‖²"}
    for key, lab in labels.items():
        if key in match.get("ratio", {}):
            ax.plot(match["grid"], match["ratio"][key], label=f"{lab} (mean {match['interp'][key]['mean']:.2f})")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set(xlabel="validation loss (matched)", ylabel=f"{names[0]} / {names[1]}", yscale="log",
           title=f"{names[0]}-to-{names[1]} ratios at matched validation loss")
    if len(match.get("grid", [])):
        ax.invert_xaxis()
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "validation-loss ranges do not overlap", ha="center", transform=ax.transAxes)
    return _save(fig, path)


def within_cross(main: dict[str, list[list[dict]]], path: Path) -> Path:
    """Within-layer and cross-layer parts of NDS vs step, and the within-layer share."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    look = looks(list(main))
    for opt, runs in main.items():
        for i, rows in enumerate(runs):
            for key, style in (("curv/within", "-"), ("curv/cross", "--")):
                x, y = _series(rows, key)
                axes[0].plot(x, y, linestyle=style, label=f"{opt} {key[5:]}" if i == 0 else None,
                             **_mark(look[opt], len(x)))
            x, y = _series(rows, "curv/within_share")
            axes[1].plot(x, y, linestyle=look[opt]["linestyle"], label=opt if i == 0 else None,
                         **_mark(look[opt], len(x)))
    axes[0].set(xlabel="step", ylabel="part of NDS (÷‖u‖²)", title="within vs cross layer")
    axes[0].set_yscale("symlog", linthresh=1e-2)
    axes[1].set(xlabel="step", ylabel="within / NDS", title="within-layer share", ylim=(-0.5, 2.0))
    for ax in axes:
        ax.legend(fontsize=7)
    return _save(fig, path)


def predicted_vs_actual(main: dict[str, list[list[dict]]], path: Path) -> Path:
    """Second-order prediction vs realized one-step loss change on the probe batch."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    lo, hi = np.inf, -np.inf
    look = looks(list(main))
    for opt, runs in main.items():
        pred = np.concatenate([_series(r, "curv/predicted")[1] for r in runs])
        real = np.concatenate([_series(r, "curv/realized")[1] for r in runs])
        ax.scatter(pred, real, s=10, color=look[opt]["color"], marker=look[opt]["marker"], label=opt, alpha=0.7)
        if pred.size:
            lo, hi = min(lo, pred.min(), real.min()), max(hi, pred.max(), real.max())
    if np.isfinite(lo):
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="y = x")
    ax.set(xlabel="predicted  −gᵀu + ½uᵀHu", ylabel="realized  L(θ−u) − L(θ)", title="predicted vs actual loss change")
    ax.legend(fontsize=7)
    return _save(fig, path)


def zipf_sweep(table: dict[str, dict[float, float]], path: Path,
               balanced: dict[str, dict[float, float]] | None = None) -> Path:
    """Trajectory-averaged NDS normalized by the Muon-like optimizer at s = 0, vs Zipf exponent:
    probe batch from the training stream (solid) and from the balanced s = 0 stream (dashed)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    look = looks(list(table))
    for tab, style, what in ((table, "-", "probe at training s"), (balanced or {}, "--", "probe at s=0")):
        for opt, vals in tab.items():
            s = sorted(vals)
            ax.plot(s, [vals[k] for k in s], linestyle=style, color=look[opt]["color"], marker=look[opt]["marker"],
                    fillstyle="full" if style == "-" else "none", label=f"{opt}, {what}")
    ax.set(xlabel="Zipf exponent s (training data)", ylabel="normalized mean NDS", title="imbalance raises NDS")
    ax.legend(fontsize=7)
    return _save(fig, path)


def quadratic_maps(rows: list[dict], path: Path) -> Path:
    """Muon/GD ratios (NDS, loss decrease) over (α, ρ) per σ_H/σ_L; '*' marks the theorem's condition."""
    plt = _plt()
    sigmas = sorted({r["sigma_ratio"] for r in rows})
    alphas = sorted({r["alpha"] for r in rows})
    rhos = sorted({r["rho"] for r in rows})
    fig, axes = plt.subplots(2, len(sigmas), figsize=(3.0 * len(sigmas) + 1.2, 6.0), squeeze=False,
                             constrained_layout=True)
    for j, sr in enumerate(sigmas):
        for i, key in enumerate(("nds_ratio/muon", "decrease_ratio/muon")):
            grid = np.full((len(alphas), len(rhos)), np.nan)
            cond = np.zeros_like(grid, dtype=bool)
            for r in rows:
                if r["sigma_ratio"] == sr:
                    a, b = alphas.index(r["alpha"]), rhos.index(r["rho"])
                    grid[a, b], cond[a, b] = r[key], bool(r["condition"])
            ax = axes[i, j]
            im = ax.imshow(grid, cmap="RdBu" if i else "viridis", vmin=(0.5 if i else 0), vmax=(1.5 if i else 1),
                           origin="lower", aspect="auto")
            for a in range(len(alphas)):
                for b in range(len(rhos)):
                    ax.text(b, a, f"{grid[a, b]:.2f}{'*' if cond[a, b] else ''}", ha="center", va="center", fontsize=6)
            ax.set_xticks(range(len(rhos)), [f"{x:g}" for x in rhos], fontsize=7)
            ax.set_yticks(range(len(alphas)), [f"{x:g}" for x in alphas], fontsize=7)
            ax.set_xlabel("ρ = w_H/w_L", fontsize=7)
            ax.set_ylabel("α = m/q" if j == 0 else "", fontsize=7)
            ax.set_title(f"{'NDS' if i == 0 else 'loss decrease'} Muon/GD\nσ_H/σ_L={sr:g}", fontsize=8)
            if j == len(sigmas) - 1:
                fig.colorbar(im, ax=axes[i, :].tolist(), shrink=0.8)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def quadratic_traces(runs: dict[str, dict[str, Any]], path: Path, title: str) -> Path:
    """NDS_t and Q(Y_t) per method on one quadratic."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    look = looks(list(runs))
    for k, r in runs.items():
        st = {"color": look[k]["color"], "marker": look[k]["marker"], "linestyle": look[k]["linestyle"], "ms": 3}
        axes[0].plot(np.arange(len(r["nds"])), r["nds"].numpy(), label=k, **st)
        axes[1].plot(np.arange(len(r["loss"])), r["loss"].numpy(), label=k, **st)
    axes[0].set(xlabel="step t", ylabel="NDS_t", yscale="log", title="NDS along the step")
    axes[1].set(xlabel="step t", ylabel="Q(Y_t) − Q*", yscale="log", title=title)
    for ax in axes:
        ax.legend(fontsize=7)
    return _save(fig, path)


def structure_curves(results: dict[str, dict[str, Any]], path: Path) -> Path:
    """ξ(r) (Kronecker energy captured) and ζ(i) (gradient energy in the top-i curvature modes)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for name, res in results.items():
        axes[0].plot(range(1, len(res["xi"]) + 1), res["xi"], "o-", ms=3, label=name)
        axes[1].plot(range(1, len(res["zeta"]) + 1), res["zeta"], "-", label=name)
    axes[0].set(xlabel="Kronecker rank r", ylabel="ξ(r)", title="Kronecker approximation quality")
    axes[1].set(xlabel="modes i (by paired curvature)", ylabel="ζ(i)", title="cumulative gradient energy")
    for ax in axes:
        ax.legend(fontsize=7)
    return _save(fig, path)
