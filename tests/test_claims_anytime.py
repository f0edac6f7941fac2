"""SF-NorMuon's anytime claim in ``muonlab bench claims``: one run read at several horizons vs AdamW per horizon."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from muonlab.bench.claims import CLAIMS, EXPERIMENTS, run_claims
from muonlab.bench.claims.registry import ANYTIME, horizon_experiment
from muonlab.bench.claims.report import evaluate
from muonlab.bench.claims.run import MODES, ArmResult, ExperimentOutcome, _config
from muonlab.bench.claims.spec import Arm, Claim, Comparison
from muonlab.bench.runner import load_run


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one torch thread avoids oversubscription when other processes share the cores."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _cfg(name: str, mode: str):
    exp = EXPERIMENTS[name]
    arm = exp.arms[0]
    return _config(exp, [(arm, list(arm.lr_grid), {})], mode, [0], 1)


@pytest.mark.parametrize("mode", MODES)
def test_each_horizon_ends_where_the_one_run_is_evaluated(mode):
    """Horizon f's AdamW run is f x the budget long, on the same data, and the one run evaluates there (each size)."""
    one = _cfg("text-constant", mode)
    assert one.schedule.kind == "constant"
    for f in ANYTIME:
        h = _cfg(horizon_experiment(f), mode)
        assert h.steps == f * one.steps, (mode, f)
        assert h.steps % one.eval_every == 0, (mode, f)  # an evaluation of the one run lands on the horizon
        assert h.schedule.kind == "warmup_cosine" and h.schedule.warmup <= h.steps // 10 + 1
        assert h.task_config == one.task_config  # same validation batches, same batch stream per seed
        assert [a.optimizer for a in EXPERIMENTS[horizon_experiment(f)].arms if a.name == "adamw"] == ["adamw"]


def test_anytime_comparisons_read_one_run_against_each_horizon_final():
    """The claim reads SF-NorMuon at each fraction of ONE text-constant run and AdamW at the end of its own run."""
    comps = [c for c in CLAIMS["sf-normuon"].comparisons if c.at_b is not None]
    assert [(c.experiment, c.a, c.at) for c in comps] == [("text-constant", "sfnormuon", f) for f in ANYTIME]
    assert [(c.exp_b, c.b, c.at_of_b) for c in comps] == [(horizon_experiment(f), "adamw", 1.0) for f in ANYTIME]
    assert len(ANYTIME) >= 3 and horizon_experiment(1.0) == "text"


def _outcome(arm: ArmResult) -> ExperimentOutcome:
    return ExperimentOutcome(None, None, None, [1, 2, 3], {arm.arm.name: arm})


def test_at_b_pairs_a_checkpoint_with_b_final_by_hand():
    """A at 25% of its 100 steps minus B's final loss, per seed: the paired t interval (t = 4.3027, n = 3)."""
    a = ArmResult(Arm("sf", "sfnormuon", (1.0,)), steps=100, heldout={1: 2.0, 2: 2.1, 3: 1.9},
                  curves={1: {0: 9.0, 25: 4.0, 50: 3.0, 100: 2.0}, 2: {0: 9.0, 25: 4.3, 50: 3.2, 100: 2.1},
                          3: {0: 9.0, 25: 3.9, 50: 2.8, 100: 1.9}})
    b = ArmResult(Arm("adamw", "adamw", (1.0,)), steps=25, heldout={1: 4.1, 2: 4.15, 3: 4.05},
                  curves={1: {0: 9.0, 25: 4.1}, 2: {0: 9.0, 25: 4.15}, 3: {0: 9.0, 25: 4.05}})
    comp = Comparison("one", "sf", "adamw", at=0.25, at_b=1.0, experiment_b="h25")
    (row,) = evaluate(Claim("x", "paper", "statement", (comp,)), {"one": _outcome(a), "h25": _outcome(b)})
    d = np.array([4.0 - 4.1, 4.3 - 4.15, 3.9 - 4.05])
    half = 4.3027 * d.std(ddof=1) / math.sqrt(3)
    assert row.interval.mean == pytest.approx(d.mean())
    assert row.interval.hi == pytest.approx(d.mean() + half, rel=1e-4)
    assert row.notes == []  # step 25 is exactly 25% of the budget
    assert comp.describe() == "sf at 25% of the budget < adamw (h25) (final)"
    # a checkpoint that is only the nearest evaluation is flagged
    off = Comparison("one", "sf", "adamw", at=0.3, at_b=1.0, experiment_b="h25")
    (row,) = evaluate(Claim("x", "paper", "statement", (off,)), {"one": _outcome(a), "h25": _outcome(b)})
    assert row.notes == ["sf read at step 25, not 30"]


def _val_at(path, step):
    return next(r["val_loss"] for r in load_run(path)[1] if r.get("step") == step and "val_loss" in r)


def test_tiny_anytime_end_to_end(tmp_path):
    """`claims sf-normuon` (tiny): each anytime figure is the by-hand pairing of the run files; the plot exists."""
    res = run_claims(["sf-normuon"], tmp_path, mode="tiny")
    assert (res.out_dir / "figures" / "sf-normuon_anytime.png").is_file()
    one = res.outcomes["text-constant"]
    sf = one.arms["sfnormuon"]
    for row in (r for r in res.rows if r.comparison.at_b is not None):
        c = row.comparison
        other = res.outcomes[c.exp_b]
        adamw = other.arms["adamw"]
        step = round(c.at * sf.steps)
        a, b = {}, {}
        for p in one.out_dir.glob("sfnormuon-lr*.jsonl"):
            header = load_run(p)[0]
            if header["lr"] == sf.best_lr and header["seed"] in one.heldout_seeds:
                a[header["seed"]] = _val_at(p, step)
        for p in other.out_dir.glob("adamw-lr*.jsonl"):
            header, _, summary = load_run(p)
            if header["lr"] == adamw.best_lr and header["seed"] in other.heldout_seeds:
                assert header["steps"] == step  # AdamW's run ends at the horizon
                b[header["seed"]] = summary["final_val_loss"]
        d = np.array([a[s] - b[s] for s in sorted(a)])
        assert sorted(a) == sorted(b) == [1, 2]
        assert row.interval.mean == pytest.approx(d.mean()), c.describe()
