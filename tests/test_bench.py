"""Tests of the benchmark harness (config, schedule, runner, callbacks, sweep, report, CLI).

Everything runs on a tiny regression task defined here (it implements the ``Task`` protocol of
``muonlab.bench.tasks.base``), so these tests do not depend on the shipped tasks.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

import muonlab
from muonlab.bench import ConfigError, load_config, run_experiment
from muonlab.bench import runner
from muonlab.bench.callbacks import UpdateStats
from muonlab.bench.config import parse_override, shipped_configs
from muonlab.bench.schedule import lr_factor, make_scheduler
from muonlab.cli import main


class TinyTask:
    """y = sin(x · w) regression with a 2-hidden-layer MLP; counts the training streams it hands out."""

    name = "tiny"
    target = 0.35
    steps = 10
    streams_started = 0

    def __init__(self, dim: int = 6, hidden: int = 12, batch_size: int = 16, data_path: str | None = None,
                 nan_after: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dim, self.hidden, self.batch_size, self.nan_after = dim, hidden, batch_size, nan_after
        g = torch.Generator().manual_seed(1234)
        self.w = torch.randn(dim, generator=g)
        self.x_val = torch.randn(64, dim, generator=g)
        self.y_val = self.f(self.x_val)
        self.calls = 0

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x @ self.w).unsqueeze(-1)

    def make_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return nn.Sequential(nn.Linear(self.dim, self.hidden), nn.Tanh(), nn.Linear(self.hidden, self.hidden),
                                 nn.Tanh(), nn.Linear(self.hidden, 1))

    def train_batches(self, seed: int):
        TinyTask.streams_started += 1
        g = torch.Generator().manual_seed(10_000 + seed)
        while True:
            x = torch.randn(self.batch_size, self.dim, generator=g)
            yield x, self.f(x)

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        self.calls += 1
        x, y = batch
        loss = nn.functional.mse_loss(model(x), y)
        return loss * math.nan if self.nan_after is not None and self.calls > self.nan_after else loss

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {"val_loss": float(nn.functional.mse_loss(model(self.x_val), self.y_val))}


TASKS = {"tiny": TinyTask}


def tiny_config(**extra) -> dict:
    cfg = {
        "name": "tiny", "steps": 10, "eval_every": 5, "seeds": [0, 1],
        "task": {"name": "tiny"},
        "schedule": {"kind": "warmup_cosine", "warmup": 2, "min_lr_ratio": 0.1},
        "callbacks": {"update_stats": {"every": 5}},
        "optimizers": {"adamw": {"lr_grid": [1e-3, 1e-2], "weight_decay": 0.0},
                       "muon": {"lr_grid": [0.01, 0.05], "ns_dtype": "float32"}},
    }
    cfg.update(extra)
    return cfg


def run_tiny(tmp_path: Path, cfg: dict | None = None, **kw):
    return run_experiment(load_config(cfg or tiny_config()), tmp_path, tasks=TASKS, progress=False,
                          console=Console(file=io.StringIO()), **kw)


def strip_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in runner.TIMING_KEYS} for r in rows]


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tiny_sweep_writes_report_and_plots(tmp_path):
    """2 optimizers x 2 lrs x 2 seeds: every run recorded, report.md and the PNGs written."""
    result = run_tiny(tmp_path)
    out = tmp_path / "tiny"
    # per optimizer: 2 sweep runs (seed 0) + 1 rerun of the best lr (seed 1)
    assert len(list(out.glob("*.jsonl"))) == 6
    report = (out / "report.md").read_text()
    for needle in ("adamw", "muon", "steps vs AdamW", "val_loss.png", "lr_sensitivity.png", "update_stats.png"):
        assert needle in report
    for png in ("val_loss.png", "lr_sensitivity.png", "update_stats.png"):
        assert (out / png).stat().st_size > 1000
    assert set(result.best_lr) == {"adamw", "muon"}
    assert result.best_lr["muon"] in (0.01, 0.05)


def test_best_adamw_reference(tmp_path):
    """adamw_lr = "best:adamw" resolves to AdamW's best lr; a forward reference is a ConfigError."""
    cfg = tiny_config()
    cfg["optimizers"]["muon"]["adamw_lr"] = "best:adamw"
    result = run_tiny(tmp_path, cfg)
    muon_runs = [r for r in result.runs if r.spec.optimizer == "muon"]
    assert {r.spec.hparams["adamw_lr"] for r in muon_runs} == {result.best_lr["adamw"]}
    assert read_rows(muon_runs[0].path)[0]["hparams"]["adamw_lr"] == result.best_lr["adamw"]
    cfg["optimizers"]["adamw"]["eps"] = "best:muon"
    with pytest.raises(ConfigError, match="optimizers.adamw.eps"):
        run_tiny(tmp_path, cfg)


def test_run_is_deterministic_for_a_seed(tmp_path):
    """Same spec and seed -> identical JSONL rows except timing fields; another seed differs."""
    task = TinyTask()
    spec = runner.RunSpec("e", "tiny", {}, "muon", 0.02, 3, {"ns_dtype": "float32"}, steps=8, eval_every=4, target=None,
                          grad_clip=1.0, callbacks={"update_stats": {"every": 4}})
    cls = muonlab.optimizers()["muon"]
    rows = []
    for i, s in enumerate([spec, spec, runner.RunSpec(**{**spec.__dict__, "seed": 4})]):
        runner.run(s, task, cls, tmp_path / f"{i}.jsonl", callbacks=[UpdateStats(every=4)])
        rows.append(strip_timing(read_rows(tmp_path / f"{i}.jsonl"))[1:])  # header differs only in date
    assert rows[0] == rows[1]
    assert rows[0] != rows[2]
    assert rows[0][-1]["status"] == "ok" and "update_rms" in rows[0][4]


def test_resume_skips_finished_and_reruns_partial(tmp_path):
    """A rerun reuses finished files untouched and reruns a file that has no summary row."""
    run_tiny(tmp_path)
    files = sorted((tmp_path / "tiny").glob("*.jsonl"))
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    before = TinyTask.streams_started
    result = run_tiny(tmp_path)
    assert TinyTask.streams_started == before and all(r.skipped for r in result.runs)
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    partial = files[0]
    partial.write_text("\n".join(partial.read_text().splitlines()[:4]) + "\n")  # header + 3 steps
    result = run_tiny(tmp_path)
    assert TinyTask.streams_started == before + 1
    assert [r.path for r in result.runs if not r.skipped] == [partial]
    assert read_rows(partial)[-1]["type"] == "summary"


@pytest.mark.parametrize("edit, key", [
    (lambda c: c["optimizers"].update(nosuch={"lr_grid": [1e-3]}), "optimizers.nosuch"),
    (lambda c: c["task"].update(name="nosuch"), "task.name"),
    (lambda c: c["task"].update(data_path="/no/such/dir"), "task.data_path"),
    (lambda c: c["task"].update(bogus=1), "task.bogus"),
    (lambda c: c["task"].update(batch_size=0), "task"),
    (lambda c: c["optimizers"]["muon"].update(lr_grid=[-0.02]), "optimizers.muon.lr_grid"),
    (lambda c: c["optimizers"]["muon"].update(lr_grid=[0.0]), "optimizers.muon.lr_grid"),
    (lambda c: c["optimizers"]["muon"].update(lr_grid=[]), "optimizers.muon.lr_grid"),
    (lambda c: c["optimizers"]["muon"].update(betaz=0.9), "optimizers.muon.betaz"),
    (lambda c: c["optimizers"]["muon"].update(momentum=1.5), "optimizers.muon"),
    (lambda c: c.update(stepz=3), "stepz"),
    (lambda c: c["schedule"].update(kind="step"), "schedule.kind"),
    (lambda c: c["schedule"].update(warmupp=3), "schedule.warmupp"),
    (lambda c: c["callbacks"].update(nosuch={"every": 1}), "callbacks.nosuch"),
    (lambda c: c.update(seeds=[]), "seeds"),
])
def test_bad_config_fails_before_training_naming_the_key(tmp_path, edit, key):
    """Invalid experiments raise ConfigError naming the key, and no run is started."""
    cfg = tiny_config()
    edit(cfg)
    before = TinyTask.streams_started
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_tiny(tmp_path, cfg)
    assert TinyTask.streams_started == before
    assert not list(tmp_path.rglob("*.jsonl"))


def test_set_overrides_parse(tmp_path):
    """--set: dotted keys, TOML literal values, bare words as strings, new keys created."""
    assert parse_override("steps=200") == (["steps"], 200)
    assert parse_override("optimizers.muon.lr_grid=[0.01, 2e-2]") == (["optimizers", "muon", "lr_grid"], [0.01, 0.02])
    assert parse_override("task.data=zipf-pcfg") == (["task", "data"], "zipf-pcfg")
    assert parse_override("grad_clip = 1.0") == (["grad_clip"], 1.0)
    assert parse_override("schedule.kind=\"constant\"") == (["schedule", "kind"], "constant")
    cfg = load_config(tiny_config(), ["steps=7", "task.hidden=5", "optimizers.adamw.betas=[0.9, 0.95]",
                                      "schedule.kind=constant"], optimizers=["adamw"])
    assert cfg.steps == 7 and cfg.task_config == {"hidden": 5} and cfg.schedule.kind == "constant"
    assert [o.name for o in cfg.optimizers] == ["adamw"] and cfg.optimizers[0].hparams["betas"] == [0.9, 0.95]
    with pytest.raises(ConfigError, match="noequals"):
        load_config(tiny_config(), ["noequals"])
    with pytest.raises(ConfigError, match="optimizers.nadam"):
        load_config(tiny_config(), optimizers=["nadam"])


def test_quick_shrinks(tmp_path):
    """--quick merges [quick], caps steps, keeps 2-point lr grids around the centre and <= 2 seeds."""
    raw = tiny_config(steps=5000, seeds=[0, 1, 2, 3], quick={"task": {"hidden": 4}, "eval_every": 10})
    raw["optimizers"]["muon"]["lr_grid"] = [0.005, 0.01, 0.02, 0.04, 0.08]
    cfg = load_config(raw, quick=True)
    assert cfg.quick and cfg.name == "tiny-quick" and cfg.steps <= 40 and cfg.seeds == [0, 1]
    assert cfg.task_config == {"hidden": 4} and cfg.eval_every <= cfg.steps
    assert {o.name: o.lr_grid for o in cfg.optimizers} == {"adamw": [1e-3, 1e-2], "muon": [0.02, 0.04]}
    full = load_config(raw)
    assert full.steps == 5000 and not full.quick and full.task_config == {}


def test_quick_shrinks_model_of_any_config():
    """--quick caps the size keys of a config that has no [quick] table, never growing the model."""
    raw = {"task": {"name": "gpt", "n_layer": 6, "n_embd": 384, "n_head": 6, "batch_size": 4},
           "optimizers": {"adamw": {"lr_grid": [1e-3]}}}
    task = load_config(raw, quick=True).task_config
    assert task["n_layer"] == 1 and task["n_embd"] == 32 and task["batch_size"] == 4
    assert task["n_embd"] % task["n_head"] == 0 and task["block_size"] == 32  # default 64 capped too
    assert load_config(raw).task_config == {"n_layer": 6, "n_embd": 384, "n_head": 6, "batch_size": 4}


def test_shipped_configs_parse_and_quick():
    """Every shipped config parses, and --quick shrinks it."""
    names = shipped_configs()
    assert {"demo", "text", "regression", "image", "gpt2-small"} <= set(names)
    for name in names:
        full, quick = load_config(name), load_config(name, quick=True)
        assert all(o.lr_grid for o in full.optimizers)
        assert quick.steps <= 40 and len(quick.seeds) <= 2 and all(len(o.lr_grid) <= 2 for o in quick.optimizers)


def test_schedule_values_at_known_steps():
    """Warmup is linear from 1/warmup; cosine and linear reach their midpoint and min_lr_ratio on time."""
    kw = dict(total=13, warmup=2, min_lr_ratio=0.1)
    assert lr_factor(0, kind="warmup_cosine", **kw) == pytest.approx(0.5)
    assert lr_factor(1, kind="warmup_cosine", **kw) == pytest.approx(1.0)
    assert lr_factor(2, kind="warmup_cosine", **kw) == pytest.approx(1.0)
    assert lr_factor(7, kind="warmup_cosine", **kw) == pytest.approx(0.55)   # half way: 0.1 + 0.9 * 0.5
    assert lr_factor(12, kind="warmup_cosine", **kw) == pytest.approx(0.1)
    assert lr_factor(4, kind="linear_decay", **kw) == pytest.approx(0.1 + 0.9 * 0.8)
    assert lr_factor(12, kind="linear_decay", **kw) == pytest.approx(0.1)
    assert lr_factor(12, kind="constant", **kw) == 1.0
    with pytest.raises(ValueError, match="kind"):
        lr_factor(0, 10, "step")


def test_scheduler_scales_every_group():
    """The LambdaLR multiplies the orthogonalized group's lr and the AdamW groups' lr by one factor."""
    model = TinyTask().make_model(0)
    opt = muonlab.optimizers()["muon"](muonlab.param_groups(model), lr=0.02, adamw_lr=3e-4)
    base = [g["lr"] for g in opt.param_groups]
    assert len(set(base)) == 2
    sched = make_scheduler(opt, total=13, kind="linear_decay", warmup=2, min_lr_ratio=0.1)
    for _ in range(4):
        opt.step()
        sched.step()
    f = lr_factor(4, 13, "linear_decay", 2, 0.1)
    assert [float(g["lr"]) for g in opt.param_groups] == pytest.approx([b * f for b in base])


class Recorder:
    """A callback that returns the step and the current gradient norm."""

    def __init__(self, every: int) -> None:
        self.every, self.steps = every, []

    def __call__(self, step, model, optimizer, task, batch):
        self.steps.append(step)
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None for g in grads)  # called after backward
        return {"rec_step": float(step), "rec_gnorm": float(torch.cat([g.flatten() for g in grads]).norm())}


def test_callbacks_called_at_right_steps_and_logged(tmp_path):
    """Callbacks run on multiples of `every`, before the step, and their dict lands in that JSONL row."""
    rec = Recorder(every=3)
    spec = runner.RunSpec("e", "tiny", {}, "adamw", 1e-2, 0, {}, steps=10, eval_every=5, target=None)
    path = tmp_path / "run.jsonl"
    runner.run(spec, TinyTask(), muonlab.optimizers()["adamw"], path, callbacks=[rec, UpdateStats(every=5)])
    assert rec.steps == [3, 6, 9]
    steps = {r["step"]: r for r in read_rows(path) if r["type"] == "step"}
    assert [s for s, r in steps.items() if "rec_step" in r] == [3, 6, 9]
    assert all(steps[s]["rec_step"] == s for s in (3, 6, 9))
    assert [s for s, r in steps.items() if "update_rms" in r] == [5, 10]
    assert [s for s, r in steps.items() if "val_loss" in r] == [0, 5, 10]


def test_divergence_is_reported_not_hidden(tmp_path):
    """A non-finite loss ends the run marked diverged; the report lists it."""
    spec = runner.RunSpec("e", "tiny", {}, "adamw", 1e-2, 0, {}, steps=10, eval_every=5, target=0.1)
    path = tmp_path / "run.jsonl"
    summary = runner.run(spec, TinyTask(nan_after=4), muonlab.optimizers()["adamw"], path)
    assert summary["status"] == "diverged" and summary["diverged_at"] == 5 and summary["final_val_loss"] is None
    assert runner.finished_summary(path) == json.loads(json.dumps(summary))


def test_sweep_with_diverged_runs_still_reports(tmp_path):
    """When runs diverge, the sweep finishes, the report lists them and the plots are still written."""
    cfg = tiny_config(callbacks={})
    cfg["task"]["nan_after"] = 3  # one task object serves every run: all runs diverge early
    result = run_tiny(tmp_path, cfg)
    report = (tmp_path / "tiny" / "report.md").read_text()
    assert "## Diverged runs" in report and "| diverged |" in report
    assert all(r.summary["status"] == "diverged" for r in result.runs)
    assert (tmp_path / "tiny" / "lr_sensitivity.png").is_file()


def test_cli_config_error_exit_2(tmp_path, capsys):
    """`muonlab bench BAD.toml` prints the error without a traceback and exits 2."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[task]\nname = "gpt"\n[optimizers.muon]\nlr_grid = [-1.0]\n')
    assert main(["bench", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "optimizers.muon.lr_grid" in err and "Traceback" not in err
    assert main(["bench", "no-such-config"]) == 2


def test_cli_list(capsys):
    """`muonlab list` names optimizers and shipped configs."""
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "muon" in out and "demo" in out


@pytest.mark.parametrize("name, overrides", [
    ("demo", ["task.train_tokens=20000", "task.val_tokens=5000"]), ("text", ["task.max_bytes=200000"]),
    ("regression", []), ("image", [])])
def test_shipped_configs_validate_against_real_tasks(name, overrides):
    """The shipped configs name real optimizers, tasks and keys (validated, in --quick size, not run)."""
    from muonlab.bench.validate import validate

    task, classes = validate(load_config(name, overrides, quick=True))
    assert set(classes) == {o.name for o in load_config(name).optimizers}


def test_gpt2_small_config_keys():
    """gpt2-small (GPU, external data) uses only keys the gpt task and the optimizers accept."""
    from muonlab.bench.tasks import task_keys
    from muonlab.bench.validate import build_optimizer

    cfg = load_config("gpt2-small")
    assert set(cfg.task_config) <= set(task_keys(cfg.task))
    registry = muonlab.optimizers()
    for opt in cfg.optimizers:  # unknown keyword arguments would raise TypeError
        build_optimizer(opt.name, registry[opt.name], TinyTask().make_model(0), opt.lr_grid[0], opt.hparams)
