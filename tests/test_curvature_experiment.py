"""The curvature experiment: quadratic runner vs Theorem 5.5's closed forms, matched-loss pairing,
config handling, the bench callback, and a tiny end-to-end run producing the report and figures."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from muonlab.bench.curvature import CurvatureProbe, add_arguments, run
from muonlab.bench.curvature.config import load_config
from muonlab.bench.curvature.matching import match_by_val_loss, trajectory_average
from muonlab.bench.curvature.quadratic import polar, run_quadratic, theorem_condition
from muonlab.data.quadratic import StructuredQuadratic


# ---------------------------------------------------------------------------------------------
# Section-5 quadratic: closed forms from the theorem's proof sketch (spec §4.1)
# ---------------------------------------------------------------------------------------------
def test_muon_nds_is_constant_alpha_mix():
    """Muon's NDS is α w_H + (1 − α) w_L at every step (all modes active, equal energy)."""
    prob = StructuredQuadratic(12, 12, alpha=0.25, rho=20.0, sigma_ratio=3.0, seed=1)
    out = run_quadratic(prob, "muon", 6)
    expected = prob.alpha * 20.0 + (1 - prob.alpha) * 1.0
    assert torch.allclose(out["nds"], torch.full((6,), expected, dtype=out["nds"].dtype), rtol=1e-8)


def test_gd_zigzags_between_curvature_levels():
    """GD's high-curvature residual share alternates P_{t+1} = 1 − P_t, so NDS_t = P_t w_H + (1−P_t) w_L."""
    prob = StructuredQuadratic(10, 10, alpha=0.2, rho=10.0, sigma_ratio=2.0, seed=2)
    out = run_quadratic(prob, "gd", 6)
    wh, wl = 10.0, 1.0
    p = [(n - wl) / (wh - wl) for n in out["nds"].tolist()]
    m, q = prob.m, prob.q
    p0 = m * 4.0 / (m * 4.0 + (q - m) * 1.0)  # m σ_H² / (m σ_H² + (q − m) σ_L²)
    assert p[0] == pytest.approx(p0, rel=1e-9)
    for a, b in zip(p, p[1:]):
        assert b == pytest.approx(1 - a, abs=1e-8)


def test_muon_loss_contracts_by_gamma_squared():
    """After step 1, Muon's suboptimality shrinks by Γ² per step, Γ = |m w_H − (q−m) w_L| / (m w_H + (q−m) w_L)."""
    prob = StructuredQuadratic(10, 10, alpha=0.1, rho=30.0, sigma_ratio=3.0, seed=3)
    loss = run_quadratic(prob, "muon", 5)["loss"]
    m, q = prob.m, prob.q
    gamma = abs(m * 30.0 - (q - m)) / (m * 30.0 + (q - m))
    for t in range(1, 4):
        assert float(loss[t + 1] / loss[t]) == pytest.approx(gamma**2, rel=1e-6)


def test_spec_example_reproduced():
    """The spec's own simulation (q = 100, T = 20, α = 0.1, ρ = 100, σ_H/σ_L = 3): NDS ratio 0.216 and
    loss-decrease ratio 1.81 for Muon vs GD; Muon's loss is below GD's at every step."""
    from muonlab.bench.curvature.quadratic import compare

    res = compare(StructuredQuadratic(100, 100, alpha=0.1, rho=100.0, sigma_ratio=3.0), 20)
    assert res["nds_ratio/muon"] == pytest.approx(0.216, abs=5e-4)
    assert res["decrease_ratio/muon"] == pytest.approx(1.81, abs=5e-3)
    assert res["below_gd_every_t/muon"] == 1.0


def test_polar_and_condition():
    """polar() sets nonzero singular values to 1 and keeps the rank; the theorem condition as stated."""
    r = torch.outer(torch.arange(1.0, 4.0, dtype=torch.float64), torch.ones(5, dtype=torch.float64))
    z = polar(r)
    assert torch.linalg.matrix_rank(z) == 1 and torch.linalg.svdvals(z)[0] == pytest.approx(1.0)
    assert theorem_condition(100.0, 0.1, 3.0) and not theorem_condition(5.0, 0.1, 3.0)
    assert not theorem_condition(100.0, 0.1, 1.0)  # unaligned control: Assumption 5.4 fails
    with pytest.raises(ValueError, match="method"):
        run_quadratic(StructuredQuadratic(4, 4), "sgd", 2)


# ---------------------------------------------------------------------------------------------
# Matched validation loss
# ---------------------------------------------------------------------------------------------
def _rows(val, metric):
    return [{"step": i, "val_loss": v, "m": x} for i, (v, x) in enumerate(zip(val, metric))]


def test_match_by_val_loss_recovers_constant_ratio():
    """Two runs with metric_a = 2·metric_b at equal loss (different step speeds) give ratio 2."""
    va = np.linspace(5.0, 3.0, 30)
    vb = np.linspace(5.0, 2.5, 12)  # faster run, fewer checkpoints
    f = lambda v: v**2  # noqa: E731
    out = match_by_val_loss(_rows(va, 2 * f(va)), _rows(vb, f(vb)), ["m"], grid=40)
    assert out["overlap"] == pytest.approx((3.0, 5.0))
    assert out["interp"]["m"]["mean"] == pytest.approx(2.0, rel=2e-3)
    assert out["nearest"]["m"]["median"] == pytest.approx(2.0, rel=0.1)


def test_match_ignores_nonpositive_and_handles_no_overlap():
    """Ratios of non-positive values are dropped; disjoint loss ranges give NaN statistics."""
    va, vb = np.linspace(5, 4, 10), np.linspace(3, 2, 10)
    out = match_by_val_loss(_rows(va, np.ones(10)), _rows(vb, np.ones(10)), ["m"])
    assert math.isnan(out["interp"]["m"]["mean"])
    v = np.linspace(5, 3, 10)
    out = match_by_val_loss(_rows(v, -np.ones(10)), _rows(v, np.ones(10)), ["m"])
    assert out["interp"]["m"]["n"] == 0.0
    assert trajectory_average([{"curv/nds": 1.0}, {"curv/nds": 3.0}, {"x": 1}]) == 2.0


# ---------------------------------------------------------------------------------------------
# Config, callback, end to end
# ---------------------------------------------------------------------------------------------
def test_config_overrides_and_errors(tmp_path):
    """TOML then --quick then --set; unknown keys and bad values raise ValueError naming them."""
    p = tmp_path / "c.toml"
    p.write_text("steps = 300\n[optimizers.muon]\nlr = 0.05\n")
    cfg = load_config(str(p), ["probe_every=30", "sweep.exponents=[0.0, 2.0]"])
    assert cfg.steps == 300 and cfg.probe_every == 30 and cfg.sweep.exponents == [0.0, 2.0]
    assert cfg.optimizers["muon"] == {"lr": 0.05, "adamw_lr": 3e-3, "ns_dtype": "float32"}
    assert load_config(None, [], quick_run=True).seeds == [0]
    with pytest.raises(ValueError, match="bogus"):
        load_config(None, ["bogus=1"])
    with pytest.raises(ValueError, match="probe_every"):
        load_config(None, ["probe_every=0"])
    with pytest.raises(ValueError, match="not found"):
        load_config(str(tmp_path / "missing.toml"))


def test_probe_callback_records_and_leaves_training_unchanged():
    """The callback writes curv/* floats and does not perturb the run (params and next step identical)."""
    import muonlab
    from muonlab.bench.tasks import make_task

    task = make_task("gpt", data="zipf-pcfg", n_layer=1, n_head=2, n_embd=8, block_size=8, batch_size=2,
                     train_tokens=5000, val_tokens=2000, eval_batches=1)
    results = []
    for probed in (False, True):
        model = task.make_model(0)
        opt = muonlab.optimizers()["muon"](muonlab.param_groups(model), lr=0.02, adamw_lr=3e-3)
        probe = CurvatureProbe(every=1)
        rows = []
        for step, batch in zip(range(1, 4), task.train_batches(0)):
            opt.zero_grad()
            task.loss(model, batch).backward()
            if probed:
                rows.append(probe(step, model, opt, task, batch))
            opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))
    row = rows[-1]
    for key in ("curv/nds", "curv/first_order", "curv/curvature_penalty", "curv/realized", "curv/within",
                "curv/cross", "curv/nds_hidden"):
        assert isinstance(row[key], float) and math.isfinite(row[key]), key
    assert row["curv/within"] + row["curv/cross"] == pytest.approx(row["curv/nds"], rel=1e-9, abs=1e-12)
    with pytest.raises(ValueError, match="every"):
        CurvatureProbe(every=0)


TINY = """
name = "tiny"
seeds = [0]
steps = 20
probe_every = 10
[task]
n_layer = 1
n_embd = 8
n_head = 2
block_size = 8
batch_size = 2
train_tokens = 8000
val_tokens = 2048
eval_batches = 1
[sweep]
exponents = [0.0, 1.0]
steps = 10
probe_every = 5
[structure]
steps = 5
matrices = ["c_q"]
[structure.task]
n_embd = 4
block_size = 8
batch_size = 2
train_tokens = 8000
val_tokens = 2048
eval_batches = 1
[quadratic]
d = 6
steps = 4
rhos = [10.0]
alphas = [0.2]
sigma_ratios = [3.0]
[quadratic.example]
d = 6
alpha = 0.2
rho = 10.0
sigma_ratio = 3.0
"""


def test_tiny_experiment_writes_report_and_figures(tmp_path):
    """`python -m muonlab curvature CONFIG --out DIR` in a tiny configuration writes report, summary, figures."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(cfg), "--out", str(tmp_path / "out"), "--no-progress"])
    assert run(args) == 0
    out = tmp_path / "out" / "tiny"
    report = (out / "report.md").read_text()
    for section in ("## 1. Main comparison", "## 3. Imbalance sweep", "## 4. Section-5 structure",
                    "## 5. Section-5 quadratic"):
        assert section in report
    summary = json.loads((out / "summary.json").read_text())
    for rel in summary["figures"].values():
        assert (out / rel).stat().st_size > 1000 and rel in report
    assert len(summary["figures"]) == 9
    assert len(list((out / "runs" / "main").glob("*.jsonl"))) == 2
    assert "Every training run was trained by this invocation." in report and summary["reused_runs"] == {}

    # The same command again reuses the finished runs and lists them; --fresh retrains every one.
    assert run(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    # main and sweep runs are reusable; the structure run always retrains (its diagnostics need the live model)
    runs = {f"{p.parent.name}/{p.stem}" for p in (out / "runs").glob("*/*.jsonl") if p.parent.name != "structure"}
    assert set(summary["reused_runs"]) == runs and len(runs) > 2
    report = (out / "report.md").read_text()
    assert f"**Reused runs** ({len(runs)};" in report and all(f"`{r}`" in report for r in runs)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/*.jsonl")}  # structure: rewritten anyway
    fresh = parser.parse_args([str(cfg), "--out", str(tmp_path / "out"), "--no-progress", "--fresh"])
    assert run(fresh) == 0
    assert json.loads((out / "summary.json").read_text())["reused_runs"] == {}
    assert all(p.stat().st_mtime_ns > t for p, t in stamps.items())  # every record rewritten
