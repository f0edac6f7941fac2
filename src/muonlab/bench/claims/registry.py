"""The claims re-measured by ``muonlab bench claims``, and the experiments they run on.

Every experiment uses four seeds: seed 0 runs the lr sweep, seeds 1-3 rerun the best lr, and the
verdicts use **only seeds 1-3** (the sweep seed chose the lr, so its result is optimistically biased).
All arms of an experiment share each seed's model initialisation and data order, so comparisons
are paired by seed. Grids are x3 (x~3.3) apart and centred on the best lr of the earlier ``text`` /
``demo`` runs (docs/BENCHMARKS.md); a best lr on a grid edge extends the grid (``run.py``).

Sizes: ``text`` = the shipped ``text`` config's model (byte-level GPT 2 x 64) at context 64 and 300
steps (``text-nowarmup``, ``text-constant``, ``text-adam``: the same with another schedule or other
arms; ``text-h75``, ``text-h150``: AdamW alone with its warmup + cosine schedule cut to 25% and 50% of
the budget, the per-horizon baselines of SF-NorMuon's anytime claim); ``zipf`` = the ``demo`` config's
task; ``image`` = the 8x8 digits CNN, 600 steps; ``regression`` = the shipped ``regression`` config.

References (papers; the claims are quoted from their abstracts):
    NAMO / NAMO-D: arXiv 2602.17080. AdaGO: arXiv 2509.02981. TrasMuon: arXiv 2602.13498.
    NorMuon: arXiv 2510.05491. AdaMuon: arXiv 2507.11005. Muon: Jordan et al. (2024),
    https://kellerjordan.github.io/posts/muon/. Polar Express: Amsel et al., arXiv 2505.16932.
    Muon on convex Lipschitz functions (EF): Parshakova et al., arXiv 2605.08980. SF-NorMuon: Apte et al.,
    arXiv 2605.23061. Adam with beta1 = beta2: Orvieto & Gower, arXiv 2505.21829.
    NAMO weight decay as implemented by the authors vs AdamW-style: minxin-zhg/namo issues #1, #3.
"""

from __future__ import annotations

from dataclasses import replace

from muonlab.bench.claims.spec import Arm, Claim, Comparison, Experiment

SEEDS = [0, 1, 2, 3]
BEST_ADAMW = "best:adamw"  # the AdamW part of every hybrid: AdamW's own best lr (as in the shipped configs)

_GPT_QUICK = {"steps": 40, "eval_every": 10, "task": {"n_layer": 1, "n_embd": 32, "block_size": 32,
                                                      "batch_size": 8}}
_GPT_TINY = {"steps": 4, "eval_every": 2, "task": {"n_embd": 16, "n_head": 2, "block_size": 16, "batch_size": 4,
                                                   "eval_batches": 1}}


def _hybrid(name: str, optimizer: str, grid: tuple[float, ...], **hparams) -> Arm:
    return Arm(name, optimizer, grid, {"adamw_lr": BEST_ADAMW, **hparams})


def _gpt(name: str, description: str, task: dict, steps: int, warmup: int, arms: tuple[Arm, ...],
         eval_every: int = 50, schedule: str = "warmup_cosine") -> Experiment:
    base = {"task": {"name": "gpt", **task}, "steps": steps, "eval_every": eval_every, "seeds": SEEDS,
            "sweep_seeds": 1, "grad_clip": 1.0,
            "schedule": {"kind": schedule, "warmup": warmup,
                         "min_lr_ratio": 0.1 if schedule != "constant" else 1.0}}
    extra = {"max_bytes": 60_000} if task.get("data") == "text" else {"train_tokens": 4000, "val_tokens": 1000}
    tiny = {**_GPT_TINY, "task": {**_GPT_TINY["task"], **extra}}
    return Experiment(name, description, base, arms, quick=_GPT_QUICK, tiny=tiny)


_TEXT = {"data": "text", "n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 64, "batch_size": 16}
_ZIPF = {"data": "zipf-pcfg", "n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 64, "batch_size": 16}

_NAMO_GRID = (0.03, 0.1, 0.3)
_MUON_GRID_TEXT = (0.02, 0.06, 0.2)
NAMO_D_C = (0.75, 0.1, 0.01)  # code default 0.75 down to the GPT-2 config's 0.01, ~x8-10 apart (log grid)


def _ablation_arms(grid: tuple[float, ...]) -> tuple[Arm, ...]:
    """Muon's defaults, then one change each (what a second Muon implementation might do differently)."""
    return (
        _hybrid("muon.polar-express", "muon", grid, orthogonalizer="polar_express"),
        _hybrid("muon.svd", "muon", grid, orthogonalizer="svd"),
        Arm("muon.bf16", "muon", (), {"adamw_lr": BEST_ADAMW, "ns_dtype": "bfloat16"}, follow="muon"),
        _hybrid("muon.no-nesterov", "muon", grid, nesterov=False),
        _hybrid("muon.momentum0.9", "muon", grid, momentum=0.9),
        _hybrid("muon.adamw-eps1e-8", "muon", grid, adamw_eps=1e-8),
        _hybrid("muon.adamw-betas0.999", "muon", grid, adamw_betas=[0.9, 0.999]),
    )


TEXT_STEPS = 300
ANYTIME = (0.25, 0.5, 1.0)  # fractions of the budget where SF-NorMuon's one run is read against tuned AdamW


def _horizon(frac: float) -> Experiment:
    """AdamW alone on ``text`` cut to ``frac`` of its budget, warmup 10% + cosine over that horizon.

    Each horizon sweeps its own lr grid (edges extended), so the baseline is AdamW with a schedule
    tuned for exactly that length: the comparison a schedule-free run must win to be "anytime".
    The 100% horizon is the ``text`` experiment's AdamW itself. The ``--quick`` and test sizes cut
    their own budgets by the same fraction, so the checkpoint and the horizon stay the same step.
    """
    steps = round(frac * TEXT_STEPS)
    warmup = round(0.1 * steps)  # text: 30 of 300
    exp = _gpt(f"text-h{steps}", f"as text, {steps} steps ({frac:.0%} of its budget), warmup {warmup} + cosine "
               "over those steps: AdamW tuned for this horizon", _TEXT, steps, warmup,
               (Arm("adamw", "adamw", (3e-3, 1e-2, 3e-2)),), eval_every=25)
    return replace(exp, quick={**exp.quick, "steps": round(frac * _GPT_QUICK["steps"])},
                   tiny={**exp.tiny, "steps": round(frac * _GPT_TINY["steps"])})


def horizon_experiment(frac: float) -> str:
    """The experiment whose AdamW arm is tuned for ``frac`` of the ``text`` budget."""
    return "text" if frac == 1.0 else f"text-h{round(frac * TEXT_STEPS)}"


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    # One text experiment for every text claim, so AdamW, Muon and NorMuon train once for all of them.
    _gpt("text", "GPT 2x64 on Python-stdlib bytes, ctx 64, 300 steps, warmup 30 + cosine", _TEXT, TEXT_STEPS, 30, (
        Arm("adamw", "adamw", (3e-3, 1e-2, 3e-2)),
        _hybrid("muon", "muon", _MUON_GRID_TEXT),
        _hybrid("namo", "namo", _NAMO_GRID),
        Arm("namo.decay-adamw", "namo", _NAMO_GRID, {"adamw_lr": BEST_ADAMW, "decay": "adamw"}, needs=("decay",)),
        *(_hybrid(f"namo-d.c{c:g}", "namo-d", _NAMO_GRID, c=c) for c in NAMO_D_C),
        _hybrid("normuon", "normuon", _MUON_GRID_TEXT),
        _hybrid("adamuon", "adamuon", (6e-3, 2e-2, 6e-2)),
        _hybrid("trasmuon", "trasmuon", (3e-3, 1e-2, 3e-2)),
        *_ablation_arms(_MUON_GRID_TEXT),
    ), eval_every=25),
    _gpt("text-nowarmup", "as text, no warmup (cosine from step 1)", _TEXT, 300, 0, (
        Arm("adamw", "adamw", (3e-3, 1e-2, 3e-2)),
        _hybrid("muon", "muon", _MUON_GRID_TEXT),
        _hybrid("trasmuon", "trasmuon", (3e-3, 1e-2, 3e-2)),
    ), eval_every=25),
    _gpt("text-constant", "as text, warmup 30 then constant lr (no decay)", _TEXT, TEXT_STEPS, 30, (
        Arm("adamw", "adamw", (3e-3, 1e-2, 3e-2)),
        _hybrid("normuon", "normuon", _MUON_GRID_TEXT),
        _hybrid("sfnormuon", "sfnormuon", (3e-3, 1e-2, 3e-2)),
    ), eval_every=25, schedule="constant"),
    *(_horizon(f) for f in ANYTIME if f != 1.0),
    # Adam(W) variants only, weight decay 0 everywhere: then the plain-parameter AdamW baseline and the
    # param_groups-built arms (whose 1-D group has no decay) differ in nothing but their betas.
    _gpt("text-adam", "as text, Adam variants only, weight decay 0", _TEXT, 300, 30, (
        Arm("adamw", "adamw", (3e-3, 1e-2, 3e-2), {"weight_decay": 0.0}),
        Arm("adamw.betas0.95", "adamw", (3e-3, 1e-2, 3e-2), {"betas": [0.9, 0.95], "weight_decay": 0.0}),
        Arm("adam-single-beta", "adam-single-beta", (3e-3, 1e-2, 3e-2), {"weight_decay": 0.0}),
    ), eval_every=25),
    _gpt("zipf", "GPT 2x64 on Zipf-PCFG (vocab 1024), ctx 64, 300 steps, warmup 30 + cosine", _ZIPF, 300, 30, (
        Arm("adamw", "adamw", (1e-3, 3e-3, 1e-2)),
        _hybrid("muon", "muon", (0.007, 0.02, 0.06)),
        *_ablation_arms((0.007, 0.02, 0.06)),
    ), eval_every=25),
    Experiment("image", "CNN (width 16) on 8x8 digits, 600 steps, warmup 30 + cosine",
               {"task": {"name": "image"}, "steps": 600, "eval_every": 50, "seeds": SEEDS, "sweep_seeds": 1,
                "schedule": {"kind": "warmup_cosine", "warmup": 30, "min_lr_ratio": 0.1}},
               (Arm("adamw", "adamw", (1e-3, 3e-3, 1e-2), {"weight_decay": 0.0}),  # Adam, as in the paper
                _hybrid("muon", "muon", (0.007, 0.02, 0.06)),
                _hybrid("adago", "adago", (0.03, 0.1, 0.3))),
               quick={"steps": 40, "eval_every": 10},
               tiny={"steps": 4, "eval_every": 2, "task": {"width": 4, "batch_size": 16}}),
    # The sign counterexample (convex, Lipschitz; deterministic: every seed is the same run). Linear
    # decay to 0, the schedule under which subgradient methods converge on such problems.
    Experiment("lipschitz", "Muon on the convex Lipschitz sign counterexample (8x8 diagonal), 400 steps, "
               "linear decay to 0", {"task": {"name": "lipschitz"}, "steps": 400, "eval_every": 20, "seeds": SEEDS,
                                     "sweep_seeds": 1,
                                     "schedule": {"kind": "linear_decay", "warmup": 0, "min_lr_ratio": 0.0}},
               (Arm("muon.no-momentum", "muon", (0.01, 0.03, 0.1), {"momentum": 0.0, "nesterov": False}),
                Arm("muon.ef", "muon", (0.01, 0.03, 0.1), {"momentum": 0.0, "nesterov": False, "error_feedback": True},
                    needs=("error_feedback",)),
                Arm("muon", "muon", (0.01, 0.03, 0.1))),
               quick={"steps": 40, "eval_every": 10}, tiny={"steps": 4, "eval_every": 2}),
    Experiment("regression", "tanh MLP 3x128 on a random sum of sinusoids, 1000 steps, constant lr",
               {"task": {"name": "regression"}, "steps": 1000, "eval_every": 50, "seeds": SEEDS, "sweep_seeds": 1,
                "schedule": {"kind": "constant", "warmup": 20, "min_lr_ratio": 1.0}},
               (Arm("adamw", "adamw", (1e-3, 3e-3, 1e-2), {"weight_decay": 0.0}),
                _hybrid("muon", "muon", (0.02, 0.06, 0.2)),   # first/last layer and biases: AdamW's best lr
                _hybrid("adago", "adago", (0.1, 0.3, 1.0))),
               quick={"steps": 40, "eval_every": 10},
               tiny={"steps": 4, "eval_every": 2, "task": {"width": 8, "n_train": 256, "n_val": 64,
                                                           "batch_size": 32}}),
)}


def _vs(exp: str, a: str, *bs: str, mult: float = 1.0) -> tuple[Comparison, ...]:
    return tuple(Comparison(exp, a, b, mult) for b in bs)


_TRAS = tuple(c for exp in ("text-nowarmup", "text") for k in (1.0, 2.0, 4.0)
              for c in _vs(exp, "trasmuon", "muon", "adamw", mult=k))

# One SF-NorMuon run (constant lr after warmup) read at each horizon vs AdamW's final loss in a run whose
# warmup + cosine schedule ends at that horizon (its own lr sweep): the paper's "anytime" comparison.
_ANYTIME = tuple(
    Comparison("text-constant", "sfnormuon", "adamw", at=f, at_b=1.0, experiment_b=horizon_experiment(f),
               label=f"sfnormuon (one run) at {f:.0%} of its budget < adamw, warmup + cosine over {f:.0%} "
                     f"({horizon_experiment(f)})")
    for f in ANYTIME)

CLAIMS: dict[str, Claim] = {c.name: c for c in (
    Claim("namo", "NAMO / NAMO-D, arXiv 2602.17080",
          "NAMO and NAMO-D beat AdamW and Muon (GPT-2 pretraining); NAMO-D gains further over NAMO; "
          "NAMO's official decay wd*min(step,1) vs AdamW-style wd*lr (minxin-zhg/namo #1, #3)",
          _vs("text", "namo", "adamw", "muon") + _vs("text", "namo-d.c0.75", "adamw", "muon", "namo")
          + _vs("text", "namo-d.c0.01", "namo", "namo-d.c0.75") + _vs("text", "namo-d.c0.1", "namo-d.c0.75")
          + _vs("text", "namo", "namo.decay-adamw"),
          plots=("c_sweep",)),
    Claim("normuon", "NorMuon, arXiv 2510.05491", "NorMuon beats Muon (GPT-2-style pretraining)",
          _vs("text", "normuon", "muon")),
    Claim("adamuon", "AdaMuon, arXiv 2507.11005", "AdaMuon beats Adam(W) (GPT-2-style pretraining)",
          _vs("text", "adamuon", "adamw")),
    Claim("adago", "AdaGO, arXiv 2509.02981",
          "AdaGO outperforms Muon and Adam on CIFAR-10 classification and function regression",
          _vs("image", "adago", "muon", "adamw") + _vs("regression", "adago", "muon", "adamw")),
    Claim("trasmuon", "TrasMuon, arXiv 2602.13498",
          "TrasMuon converges faster than its baselines and is stable and robust without warmup",
          _TRAS, lr_multiples=(2.0, 4.0), plots=("lr_multiples",)),
    *(Claim(f"ablation-{exp}", "Muon implementation ablation (muonlab)",
            "which of Muon's implementation choices change the final loss at small scale "
            "(NS schedule / exact polar, bf16 NS, Nesterov, momentum, the AdamW part's eps and betas)",
            tuple(Comparison(exp, a.name, "muon") for a in _ablation_arms(())))
      for exp in ("text", "zipf")),
    Claim("ef-muon", "Muon on convex Lipschitz functions, arXiv 2605.08980",
          "Muon (no momentum) does not converge on a convex Lipschitz function; error feedback fixes it "
          "(deterministic problem: every seed is the same run, so the intervals have zero width)",
          _vs("lipschitz", "muon.ef", "muon.no-momentum", "muon")),
    Claim("sf-normuon", "SF-NorMuon, arXiv 2605.23061",
          "schedule-free NorMuon trains 'anytime': ONE run without a decay schedule, read (at its average x) at "
          "25%, 50% and 100% of the budget, beats AdamW whose warmup + cosine schedule ends at that horizon (a "
          "separate run per horizon, lr tuned per horizon); its checkpoints beat NorMuon at a constant lr and "
          "match NorMuon with a cosine schedule",
          _ANYTIME
          + tuple(Comparison("text-constant", "sfnormuon", "normuon", at=f) for f in (0.5, 1.0))
          + tuple(Comparison("text-constant", "sfnormuon", "normuon", at=f, experiment_b="text")
                  for f in (0.5, 1.0)),
          plots=("anytime",)),
    Claim("adam-beta1-eq-beta2", "Orvieto & Gower, arXiv 2505.21829",
          "Adam with beta1 = beta2 (0.95) matches or beats Adam with separate betas",
          _vs("text-adam", "adam-single-beta", "adamw", "adamw.betas0.95")),
)}

GROUPS: dict[str, list[str]] = {"ablation": ["ablation-text", "ablation-zipf"]}


def resolve_names(names: list[str] | None) -> list[str]:
    """Claim names (``None``/empty: all; a group name expands); unknown names raise ``ValueError``."""
    if not names:
        return list(CLAIMS)
    out: list[str] = []
    for name in names:
        expanded = GROUPS.get(name, [name])
        for n in expanded:
            if n not in CLAIMS:
                raise ValueError(f"unknown claim {name!r} (known: {sorted(CLAIMS) + sorted(GROUPS)})")
            if n not in out:
                out.append(n)
    return out
