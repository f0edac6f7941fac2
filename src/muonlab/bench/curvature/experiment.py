"""The curvature reproduction: runs, analysis, figures, report (``python -m muonlab curvature``).

Four parts, each at CPU scale:

1. **Main comparison** (gpt / Zipf-PCFG s = 1, validation at s = 0): AdamW vs Muon, probed every
   ``probe_every`` steps; Adam-to-Muon ratios of curvature penalty, NDS and ``‖u‖²`` at matched
   validation loss (Observations 1, 2), and the within-/cross-layer split (Observation 4).
2. **Imbalance sweep**: trajectory-averaged NDS for s in ``sweep.exponents``, normalized by the
   Muon-like optimizer at s = 0 (Observation 3).
3. **Section-5 structure**: ξ(r), η_sd, paired-curvature span and ζ on the attention matrices of a
   small Muon-trained GPT.
4. **Section-5 quadratic**: GD vs Adam vs Muon with exact line search (Figure 7, Theorem 5.5).

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from muonlab.bench.curvature import plots
from muonlab.bench.curvature import quadratic as quad
from muonlab.bench.curvature.config import CurvatureConfig
from muonlab.bench.curvature.matching import match_by_val_loss, trajectory_average
from muonlab.bench.curvature.runs import structure, train
from muonlab.data.quadratic import StructuredQuadratic

RATIO_KEYS = ("curv/curvature_penalty", "curv/nds", "curv/u_norm_sq", "curv/first_order", "curv/within",
              "curv/cross", "curv/realized")


class _Progress:
    """A rich progress bar over all training steps (silent when disabled)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled, self._bar, self._task, self._done = total, enabled, None, None, 0

    @contextlib.contextmanager
    def running(self) -> Iterator["_Progress"]:
        if not self.enabled:
            yield self
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), TimeRemainingColumn()) as bar:
            self._bar, self._task = bar, bar.add_task("curvature", total=self.total)
            yield self

    def phase(self, text: str) -> Any:
        base = self._done
        if self._bar is not None:
            self._bar.update(self._task, description=text)

        def on_step(step: int, total: int) -> None:
            self._done = base + step
            if self._bar is not None:
                self._bar.update(self._task, completed=self._done)

        return on_step


def _total_steps(cfg: CurvatureConfig) -> int:
    n = len(cfg.optimizers) * len(cfg.seeds) * cfg.steps
    if cfg.sweep.enabled:
        n += len(cfg.sweep.exponents) * len(cfg.optimizers) * len(cfg.sweep.seeds) * cfg.sweep.steps
    if cfg.structure.enabled:
        n += cfg.structure.steps
    return n


def _mean_curve_match(pairs: list[dict]) -> dict:
    """Average per-seed matched curves onto the first pair's grid (grids differ slightly per seed)."""
    good = [p for p in pairs if len(p["grid"])]
    if not good:
        return pairs[0]
    ref = good[0]
    out = {"grid": ref["grid"], "ratio": {}, "interp": {}, "nearest": {}, "per_seed": pairs}
    for key in ref["ratio"]:
        curves = [np.interp(ref["grid"][::-1], p["grid"][::-1], p["ratio"][key][::-1])[::-1] for p in good]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (no positive pair) stay NaN
            out["ratio"][key] = np.nanmean(np.vstack(curves), axis=0)
        for mode in ("interp", "nearest"):
            vals = [p[mode][key]["mean"] for p in good if math.isfinite(p[mode][key]["mean"])]
            meds = [p[mode][key]["median"] for p in good if math.isfinite(p[mode][key]["median"])]
            out[mode][key] = {"mean": float(np.mean(vals)) if vals else math.nan,
                              "median": float(np.mean(meds)) if meds else math.nan,
                              "seed_spread": float(np.std(vals)) if vals else math.nan}
    return out


def _share_trend(runs: list[list[dict]]) -> dict[str, float]:
    """Mean within-layer share over the first and the last third of the probes (across seeds)."""
    early, late = [], []
    for rows in runs:
        vals = [r["curv/within_share"] for r in rows if "curv/within_share" in r and math.isfinite(r["curv/within_share"])]
        k = max(1, len(vals) // 3)
        early += vals[:k]
        late += vals[-k:]
    return {"early": float(np.median(early)) if early else math.nan, "late": float(np.median(late)) if late else math.nan}


def run_experiment(cfg: CurvatureConfig, out: Path, *, progress: bool = True, command: str = "",
                   fresh: bool = False) -> dict[str, Any]:
    """Run every enabled part, write ``summary.json``, the figures and ``report.md`` under ``out``.

    Finished runs with the same cache key are reused unless ``fresh``; the report lists each reused run.
    """
    from muonlab.bench.curvature.report import write_report

    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    names = list(cfg.optimizers)
    base, ref = names[0], names[-1]  # baseline (Adam-like) first, Muon-like last
    summary: dict[str, Any] = {"config": _asdict(cfg), "command": command, "optimizers": names}
    figures: dict[str, Path] = {}
    bar = _Progress(_total_steps(cfg), progress)
    tasks: dict = {}
    reused: dict[str, str] = {}
    summary["reused_runs"] = reused  # filled as the runs go; run id -> origin of the reused record
    try:
        with bar.running():
            main: dict[str, list[list[dict]]] = {o: [] for o in names}
            for seed in cfg.seeds:
                for o in names:
                    main[o].append(train(cfg, out, experiment="main", task_cfg=cfg.task, optimizer=o, seed=seed,
                                         steps=cfg.steps, probe_every=cfg.probe_every,
                                         layer_split=cfg.probe.layer_split, tasks=tasks, fresh=fresh, reused=reused,
                                         on_step=bar.phase(f"main {o} seed {seed}")))
            pairs = [match_by_val_loss(main[base][i], main[ref][i], RATIO_KEYS) for i in range(len(cfg.seeds))]
            match = _mean_curve_match(pairs)
            summary["match"] = {m: {k: match[m][k] for k in match[m]} for m in ("interp", "nearest")}
            summary["overlap"] = [p["overlap"] for p in pairs]
            summary["decrease_win_frac"] = _win_fraction(pairs)
            summary["within_share"] = {o: _share_trend(main[o]) for o in names}
            summary["final_val_loss"] = {o: [rows[-1].get("val_loss", math.nan) for rows in main[o]] for o in names}
            summary["nds_mean"] = {o: [trajectory_average(rows) for rows in main[o]] for o in names}
            summary["taylor_fit"] = _taylor_fit(main)
            figures["nds_vs_step"] = plots.nds_vs_step(main, fig_dir / "nds_vs_step.png")
            figures["taylor"] = plots.taylor_vs_val_loss(main, fig_dir / "taylor_vs_val_loss.png")
            figures["ratios"] = plots.ratios(match, fig_dir / "ratios.png", (base, ref))
            if cfg.probe.layer_split:
                figures["within_cross"] = plots.within_cross(main, fig_dir / "within_cross.png")
            figures["pred_vs_actual"] = plots.predicted_vs_actual(main, fig_dir / "predicted_vs_actual.png")

            if cfg.sweep.enabled:
                table: dict[str, dict[float, list[float]]] = {o: {} for o in names}
                alt_table: dict[str, dict[float, list[float]]] = {o: {} for o in names}
                s0 = min(cfg.sweep.exponents)
                balanced = {**cfg.task, "exponent": float(s0)}  # second probe batch: the s0 stream
                for s in cfg.sweep.exponents:
                    task_cfg = {**cfg.task, "exponent": float(s)}
                    for seed in cfg.sweep.seeds:
                        for o in names:
                            rows = train(cfg, out, experiment="sweep", task_cfg=task_cfg, optimizer=o, seed=seed,
                                         steps=cfg.sweep.steps, probe_every=cfg.sweep.probe_every,
                                         layer_split=False, tasks=tasks, fresh=fresh, reused=reused, on_step=bar.phase(f"sweep s={s:g} {o}"),
                                         alt_task=balanced)
                            table[o].setdefault(float(s), []).append(trajectory_average(rows))
                            alt_table[o].setdefault(float(s), []).append(trajectory_average(rows, "curv_alt/nds"))
                for key, tab in (("sweep", table), ("sweep_balanced_probe", alt_table)):
                    norm = float(np.mean(tab[ref][float(s0)]))
                    summary[key] = {o: {s: float(np.mean(v)) / norm for s, v in t.items()} for o, t in tab.items()}
                    summary[key + "_raw"] = {o: {s: v for s, v in t.items()} for o, t in tab.items()}
                figures["zipf_sweep"] = plots.zipf_sweep(summary["sweep"], fig_dir / "zipf_sweep.png",
                                                         summary["sweep_balanced_probe"])

            if cfg.structure.enabled:
                summary["structure"] = structure(cfg.structure, cfg, out, on_step=bar.phase("structure (Muon)"))
                figures["structure"] = plots.structure_curves(summary["structure"], fig_dir / "structure.png")

        if cfg.quadratic.enabled:
            qc = cfg.quadratic
            rows = quad.sweep(qc.d, qc.steps, qc.rhos, qc.alphas, qc.sigma_ratios, qc.adam_betas)
            summary["quadratic"] = rows
            figures["quadratic"] = plots.quadratic_maps(rows, fig_dir / "quadratic_ratios.png")
            ex = qc.example
            prob = StructuredQuadratic(int(ex["d"]), int(ex["d"]), alpha=ex["alpha"], rho=ex["rho"],
                                       sigma_ratio=ex["sigma_ratio"])
            res = quad.compare(prob, qc.steps, qc.adam_betas)
            summary["quadratic_example"] = {k: v for k, v in res.items() if k != "runs"}
            summary["quadratic_example"].update(ex)
            figures["quadratic_traces"] = plots.quadratic_traces(
                res["runs"], fig_dir / "quadratic_traces.png",
                f"α={prob.alpha:g}, ρ={ex['rho']:g}, σ_H/σ_L={ex['sigma_ratio']:g}")
    finally:
        torch.set_num_threads(threads)
    summary["wall_time_s"] = time.perf_counter() - t0
    summary["figures"] = {k: str(v.relative_to(out)) for k, v in figures.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default), encoding="utf-8")
    write_report(summary, out / "report.md")
    return summary


def _win_fraction(pairs: list[dict]) -> dict[str, float]:
    """Fraction of the matched-loss grid where the Muon-like run's one-step decrease beats the baseline's
    (``realized`` is a loss change, so a larger decrease is a smaller value), averaged over seeds."""
    fr = [float(np.mean(p["b"]["curv/realized"] < p["a"]["curv/realized"])) for p in pairs if len(p["grid"])]
    gain = [float(np.mean(p["b"]["curv/first_order"] / p["a"]["curv/first_order"])) for p in pairs if len(p["grid"])]
    return {"realized": float(np.mean(fr)) if fr else math.nan,
            "first_order_ratio_muon_over_base": float(np.mean(gain)) if gain else math.nan}


def _taylor_fit(main: dict[str, list[list[dict]]]) -> dict[str, float]:
    """How well the quadratic model predicts the realized change: median |residual| / |realized|."""
    out = {}
    for o, runs in main.items():
        rel = [abs(r["curv/taylor_residual"]) / abs(r["curv/realized"]) for rows in runs for r in rows
               if "curv/realized" in r and abs(r["curv/realized"]) > 0]
        out[o] = float(np.median(rel)) if rel else math.nan
    return out


def _asdict(cfg: CurvatureConfig) -> dict:
    import dataclasses

    return dataclasses.asdict(cfg)


def _json_default(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return str(x)
