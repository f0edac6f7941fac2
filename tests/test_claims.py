"""``muonlab bench claims``: registry, phases (sweep, edge extension, seeds, lr multiples), verdicts, report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from muonlab.bench.claims import CLAIMS, EXPERIMENTS, run_claims
from muonlab.bench.claims.cli import main as claims_main
from muonlab.bench.claims.registry import resolve_names
from muonlab.bench.claims.run import MAX_EXTEND, run_arms, score, skip_reason
from muonlab.bench.claims.report import evaluate
from muonlab.bench.claims.run import ArmResult
from muonlab.bench.claims.spec import Arm, Claim, Comparison, Experiment
from muonlab.bench.runner import load_run
from muonlab.bench.stats import DOES_NOT_HOLD, HOLDS, NOT_RESOLVED
from muonlab.bench.sweep import RunRecord

VERDICTS = {HOLDS, DOES_NOT_HOLD, NOT_RESOLVED, "skipped"}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one torch thread avoids oversubscription when other processes share the cores."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_registry_is_consistent():
    """Every comparison names arms its experiment defines; every experiment has >= 3 held-out seeds."""
    for claim in CLAIMS.values():
        assert claim.todo or claim.comparisons, claim.name
        for c in claim.comparisons:
            EXPERIMENTS[c.experiment].arm(c.a), EXPERIMENTS[c.exp_b].arm(c.b)
    for exp in EXPERIMENTS.values():
        assert len(exp.base["seeds"]) - exp.base["sweep_seeds"] >= 3, exp.name
        for arm in exp.arms:
            for dep in arm.depends_on():
                exp.arm(dep)
            assert arm.follow or len(arm.lr_grid) >= 3, arm.name  # an interior optimum needs 3+ points


def test_namo_d_c_grid_reaches_the_paper_value():
    """NAMO-D's clamp is swept from the code default down to the GPT-2 config's c = 0.01."""
    cs = sorted(a.hparams["c"] for a in EXPERIMENTS["text"].arms if a.optimizer == "namo-d")
    assert cs[0] == 0.01 and cs[-1] == 0.75 and len(cs) >= 3


def test_resolve_names():
    """Groups expand, duplicates collapse, unknown names raise ValueError naming them."""
    assert resolve_names(["ablation", "ablation-zipf"]) == ["ablation-text", "ablation-zipf"]
    assert resolve_names(None) == list(CLAIMS)
    with pytest.raises(ValueError, match="nope"):
        resolve_names(["nope"])


def test_cli_unknown_claim_exits_2(capsys):
    """An unknown claim is a usage error before any training."""
    assert claims_main(["nope"]) == 2
    assert "unknown claim 'nope'" in capsys.readouterr().err


def test_skip_reason_for_missing_option():
    """An arm whose class lacks a needed keyword is skipped with a message that names it."""
    class Opt:
        def __init__(self, params, lr=0.1):
            pass

    assert "no 'decay' option" in skip_reason(Arm("x", "opt", (1.0,), needs=("decay",)), {"opt": Opt})
    assert "not registered" in skip_reason(Arm("x", "missing", (1.0,)), {"opt": Opt})
    assert skip_reason(Arm("x", "opt", (1.0,)), {"opt": Opt}) is None


def _quadratic(arms, steps=4, task=None) -> Experiment:
    task = task or {"name": "quadratic", "d1": 8, "d2": 8, "r": 2}
    base = {"task": task, "steps": steps, "eval_every": 2,
            "seeds": [0, 1, 2, 3], "sweep_seeds": 1, "schedule": {"kind": "constant", "warmup": 0, "min_lr_ratio": 1.0}}
    return Experiment("quad", "test quadratic", base, tuple(arms))


def test_edge_optimum_extends_the_grid_then_is_flagged(tmp_path):
    """lrs far too small: the best is always the largest, the grid grows MAX_EXTEND times, then it is flagged."""
    exp = _quadratic([Arm("adamw", "adamw", (1e-6, 2e-6, 4e-6))])
    out = run_arms(exp, {"adamw"}, {"adamw": (2.0,)}, tmp_path, mode="full")
    r = out.arms["adamw"]
    assert r.extended == MAX_EXTEND
    assert r.grid == pytest.approx([1e-6, 2e-6, 4e-6, 8e-6, 1.6e-5])
    assert r.best_lr == pytest.approx(1.6e-5) and r.edge
    assert sorted(r.heldout) == [1, 2, 3] == out.heldout_seeds  # the sweep seed is not a held-out seed
    assert sorted(r.multiples[2.0]) == [1, 2, 3]
    # the 2x-best runs really ran at 2 x best lr
    lrs = {json.loads(p.read_text().splitlines()[0])["lr"] for p in out.out_dir.glob("*.jsonl")}
    assert any(lr == pytest.approx(3.2e-5) for lr in lrs)


def test_follow_arm_runs_at_its_reference_best_lr(tmp_path):
    """A follow arm has a one-point grid at the reference arm's best lr, on every seed."""
    exp = _quadratic([Arm("adamw", "adamw", (1e-2, 3e-2, 1e-1)),
                      Arm("muon", "muon", (1e-3, 3e-3, 1e-2), {"adamw_lr": "best:adamw"}),
                      Arm("muon.fp64ns", "muon", (), {"adamw_lr": "best:adamw", "ns_dtype": "float64"},
                          follow="muon")],
                     task={"name": "regression", "width": 8, "n_train": 128, "n_val": 32, "batch_size": 32})
    out = run_arms(exp, {"muon.fp64ns"}, {}, tmp_path, mode="full")
    assert out.arms["muon.fp64ns"].grid == [out.arms["muon"].best_lr]
    assert sorted(out.arms["muon.fp64ns"].heldout) == [1, 2, 3]


def test_diverged_run_scores_its_initial_loss(tmp_path):
    """A diverged run counts as no progress: the validation loss of its step-0 evaluation."""
    path = tmp_path / "run.jsonl"
    rows = [{"type": "config"}, {"type": "step", "step": 0, "val_loss": 5.5},
            {"type": "step", "step": 1, "train_loss": float("nan")},
            {"type": "summary", "status": "diverged", "final_val_loss": None}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    rec = RunRecord(spec=None, path=path, phase="seeds", summary=rows[-1])
    assert score(rec) == (5.5, True)
    ok = RunRecord(spec=None, path=path, phase="seeds", summary={"status": "ok", "final_val_loss": 4.2})
    assert score(ok) == (4.2, False)


def _final_losses(out_dir, arm, lr, seeds):
    vals = {}
    for p in out_dir.glob(f"{arm}-lr*.jsonl"):
        header, _, summary = load_run(p)
        if header["optimizer"] == arm and header["lr"] == lr and header["seed"] in seeds:
            vals[header["seed"]] = summary["final_val_loss"]
    return vals


def test_tiny_claim_end_to_end(tmp_path):
    """`claims normuon` (tiny): report + plots; the figure equals a by-hand paired t interval."""
    res = run_claims(["normuon"], tmp_path, mode="tiny")
    assert res.report_path.is_file() and res.plots and all(p.is_file() for p in res.plots)
    text = res.report_path.read_text()
    assert "| NorMuon, arXiv 2510.05491 | normuon < muon | `text` |" in text
    row = next(r for r in res.rows if r.claim.name == "normuon")
    out = res.outcomes["text"]
    held = out.heldout_seeds
    a = _final_losses(out.out_dir, "normuon", out.arms["normuon"].best_lr, held)
    b = _final_losses(out.out_dir, "muon", out.arms["muon"].best_lr, held)
    d = np.array([a[s] - b[s] for s in sorted(held)])
    half = 12.7062 * d.std(ddof=1) / math.sqrt(len(d))  # n = 2 held-out seeds in tiny/quick runs
    assert len(d) == 2
    assert row.interval.mean == pytest.approx(d.mean())
    assert row.interval.lo == pytest.approx(d.mean() - half, rel=1e-4)
    assert row.verdict in VERDICTS - {"skipped"}


@pytest.mark.slow
def test_tiny_all_claims(tmp_path):
    """Every claim runs in the tiny form; every row has a verdict; the report has the table and plots."""
    res = run_claims(None, tmp_path, mode="tiny")
    assert {r.claim.name for r in res.rows} == set(CLAIMS)
    assert all(r.verdict in VERDICTS for r in res.rows)
    assert (res.out_dir / "figures" / "trasmuon_lr_multiples.png").is_file()
    assert (res.out_dir / "figures" / "namo_c_sweep.png").is_file()


def test_todo_claim_is_skipped_with_its_reason():
    """A claim that cannot be tested yet yields one 'skipped' row carrying the reason, never a figure."""
    (row,) = evaluate(Claim("x", "paper", "statement", todo="not in this version"), {})
    assert row.verdict == "skipped" and row.interval is None and row.notes == ["not in this version"]


def test_orthogonal_arms_skipped_when_nothing_routes_to_them(tmp_path, monkeypatch):
    """When routing sends no parameter to the orthogonalized part, Muon arms are skipped, AdamW still runs."""
    import muonlab.bench.claims.run as R

    exp = _quadratic([Arm("adamw", "adamw", (1e-2, 3e-2, 1e-1)), Arm("muon", "muon", (1e-2, 3e-2, 1e-1))])
    monkeypatch.setattr(R, "hidden_matrices", lambda cfg: 0)
    out = run_arms(exp, {"muon", "adamw"}, {}, tmp_path, mode="tiny")
    assert "routes no parameter" in out.arms["muon"].skipped and not out.arms["muon"].heldout
    assert out.arms["adamw"].skipped is None and out.arms["adamw"].heldout


def test_hidden_matrices_counts_the_orthogonal_part():
    """The MLP of the regression task has its hidden matrices routed to the orthogonalized part."""
    from muonlab.bench.claims.run import _config, hidden_matrices

    exp = _quadratic([], task={"name": "regression", "width": 8, "depth": 3, "n_train": 64, "n_val": 16})
    cfg = _config(exp, [(Arm("muon", "muon", (0.02,)), [0.02], {})], "tiny", [0], 1)
    assert hidden_matrices(cfg) >= 1


def test_values_at_a_checkpoint():
    """at=0.5 reads each seed's evaluation nearest half the budget; a run diverged before it scores its start."""
    r = ArmResult(Arm("a", "adamw", (1.0,)), steps=100,
                  heldout={1: 2.0, 2: 9.0}, diverged=[2],
                  curves={1: {0: 9.0, 25: 5.0, 50: 4.0, 75: 3.0, 100: 2.0}, 2: {0: 9.0, 25: 6.0}})
    assert r.values(at=0.5) == {1: 4.0, 2: 9.0}
    assert r.values(at=0.2) == {1: 5.0, 2: 6.0}
    assert r.values() == {1: 2.0, 2: 9.0}
    assert Comparison("e", "a", "b", at=0.5, experiment_b="f").describe() == "a < b (f) at 50% of the budget"
