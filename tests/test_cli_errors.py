"""Bad input to every CLI (bench, curvature, perf, probes, list): one clear line on stderr, exit status 2.

Each case calls :func:`muonlab.cli.main` in-process with the training / measuring entry points
replaced by a tripwire, so a check that let bad input through fails loudly instead of running an
experiment; one end-to-end case goes through ``python -m muonlab`` in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import muonlab
from muonlab.cli import main
from tests.test_bench import TASKS, TinyTask

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


class Started(AssertionError):
    """Raised by the tripwires: work began although the input was invalid."""


def _trip(*args, **kwargs):
    raise Started("work started before the bad input was rejected")


@pytest.fixture(autouse=True)
def tripwires(monkeypatch):
    """No training run, curvature experiment, step timing or probe may start in these tests."""
    import muonlab.bench.curvature.experiment as curvature_experiment
    import muonlab.bench.runner as runner
    import muonlab.perf as perf
    import muonlab.probes as probes

    monkeypatch.setattr(runner, "run", _trip)
    monkeypatch.setattr(curvature_experiment, "run_experiment", _trip)
    monkeypatch.setattr(perf, "run", _trip)  # the step-time measurement
    monkeypatch.setattr(probes, "run_probes", _trip)


def error_line(capsys, argv: list[str]) -> str:
    """Run the CLI, check exit status 2 and a single stderr line without a traceback; return that line."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return lines[0]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A tiny bench config on the regression task of tests/test_bench.py; returns ``bench CONFIG --out DIR``."""
    import muonlab.bench.validate as validate

    monkeypatch.setattr(validate, "default_tasks", lambda: dict(TASKS))
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('name = "tiny"\nsteps = 10\neval_every = 5\n[task]\nname = "tiny"\n[schedule]\nwarmup = 2\n'
                   '[optimizers.adamw]\nlr_grid = [1e-2]\n[optimizers.muon]\nlr_grid = [0.02]\n')
    return ["bench", str(cfg), "--out", str(tmp_path / "runs"), "--no-progress"]


def constructor_message(cls: type, **kwargs) -> str:
    """The ValueError message of ``cls(params, **kwargs)``, from the constructor itself."""
    with pytest.raises(ValueError) as info:
        cls([torch.nn.Parameter(torch.zeros(4, 4))], **kwargs)
    return " ".join(str(info.value).split())


# ----------------------------------------------------------------------------------------------- bench

@pytest.mark.parametrize("overrides, expected", [
    (["optimizers.adamw.betaz=0.9"], "optimizers.adamw.betaz: unknown hyperparameter 'betaz' for adamw; "
                                     "did you mean 'betas'?"),
    (["optimizers.muon.betaz=0.9"], "optimizers.muon.betaz: unknown hyperparameter 'betaz' for muon; "
                                    "did you mean 'adamw_betas'?"),
    (["optimizers.muon.ns_step=3"], "did you mean 'ns_steps'?"),
    (["stepz=3"], "stepz: unknown key 'stepz'; did you mean 'steps'?"),
    (["schedule.warmpu=3"], "schedule.warmpu: unknown key 'warmpu'; did you mean 'warmup'?"),
    (["task.hiden=3"], "task.hiden: unknown key 'hiden' for task 'tiny'; did you mean 'hidden'?"),
    (["optimizers.muom.lr_grid=[0.02]"], "optimizers.muom: unknown optimizer 'muom'; did you mean 'muon'?"),
    (["callbacks.update_stat.every=2"], "callbacks.update_stat: unknown callback 'update_stat'; "
                                        "did you mean 'update_stats'?"),
    (["steps=0"], "steps: must be an integer > 0, got 0"),
    (["eval_every=-1"], "eval_every: must be an integer > 0, got -1"),
    (["optimizers.muon.lr_grid=[-0.02]"], "optimizers.muon.lr_grid: learning rates must be > 0"),
])
def test_bench_bad_config(capsys, tiny, overrides, expected):
    """Unknown names get the nearest valid one; out-of-range values name their own key."""
    before = TinyTask.streams_started
    line = error_line(capsys, [*tiny, *[a for o in overrides for a in ("--set", o)]])
    assert line.startswith("muonlab bench: config error: ") and expected in line
    assert TinyTask.streams_started == before


def test_bench_bad_value_has_the_constructors_message(capsys, tiny):
    """An invalid hyperparameter value is reported with the optimizer constructor's own ValueError message."""
    line = error_line(capsys, [*tiny, "--set", "optimizers.muon.momentum=1.5"])
    assert line == "muonlab bench: config error: optimizers.muon: " + constructor_message(muonlab.Muon, momentum=1.5)
    line = error_line(capsys, [*tiny, "--set", "optimizers.adamw.eps=-1.0"])
    assert line.endswith(constructor_message(muonlab.AdamW, eps=-1.0))


def test_bench_quick_negative_steps_blames_steps(capsys):
    """`bench demo --quick --set steps=-5` names `steps`, not a value derived from it (schedule.warmup)."""
    line = error_line(capsys, ["bench", "demo", "--quick", "--set", "steps=-5"])
    assert line == "muonlab bench: config error: steps: must be an integer > 0, got -5"


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_bench_unavailable_device(capsys, tiny, device):
    """`--set device=cuda` on a machine (or torch build) without CUDA is a config error, not a traceback."""
    line = error_line(capsys, [*tiny, "--set", f"device={device}"])
    assert f"device: {device!r} is not available on this machine" in line and torch.__version__ in line


def test_device_index_checked_against_visible_devices(capsys, tiny, monkeypatch):
    """With CUDA present (faked: one device), `cuda:3` names the device count; `cuda:0` and `auto` pass."""
    from muonlab.bench.overrides import ConfigError
    from muonlab.bench.validate import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    line = error_line(capsys, [*tiny, "--set", "device=cuda:3"])
    assert line.endswith("device: 'cuda:3': no such device (1 cuda device(s) visible)")
    for ok in ("cuda", "cuda:0", "auto", "cpu"):
        check_device(ok)
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        check_device("tpu")


def test_bench_other_bad_input(capsys, tiny, tmp_path):
    """--optimizers with a typo, --nproc garbage, an unknown config name, an --out that is a file, a bad flag."""
    assert "--optimizers names 'muom', which this config does not define; did you mean 'muon'?" in error_line(
        capsys, [*tiny, "--optimizers", "adamw,muom"])
    assert "--nproc must be an integer >= 1, got 'two'" in error_line(capsys, [*tiny, "--nproc", "two"])
    assert "unknown config 'no-such-config'" in error_line(capsys, ["bench", "no-such-config"])
    (tmp_path / "file").write_text("")
    assert "--out: " in error_line(capsys, ["bench", "demo", "--out", str(tmp_path / "file")])
    line = error_line(capsys, [*tiny, "--bogus"])
    assert line == "muonlab: error: unrecognized arguments: --bogus (see muonlab --help)"
    (tmp_path / "broken.toml").write_text("steps = = 3\n")
    assert "invalid TOML" in error_line(capsys, ["bench", str(tmp_path / "broken.toml")])


# ------------------------------------------------------------------------------------------- curvature

@pytest.mark.parametrize("argv, expected", [
    (["--set", "optimizers.lion.lr=1e-4"], "optimizers.lion: unknown optimizer 'lion'"),
    (["--set", "optimizers.muon.betaz=0.9"], "optimizers.muon.betaz: unknown hyperparameter 'betaz' for muon; "
                                              "did you mean 'adamw_betas'?"),
    (["--quick", "--set", "steps=-5"], "steps: must be an integer >= 1, got -5"),
    (["--set", "stepz=3"], "stepz: unknown config key 'stepz'; did you mean 'steps'?"),
    (["--set", "sweep.stepz=3"], "sweep.stepz: unknown config key 'stepz'; did you mean 'steps'?"),
    (["--set", "task.n_embdd=8"], "task.n_embdd: unknown key 'n_embdd' for the gpt task; did you mean 'n_embd'?"),
    (["--set", "probe_every=0"], "probe_every: must be in [1, steps=500], got 0"),
    (["--set", "steps=abc"], "steps: must be an integer, got 'abc'"),
    (["--set", "optimizers.muon.lr=0"], "optimizers.muon.lr: must be a number > 0, got 0"),
    (["--set", "schedule.kind=step"], "schedule.kind: must be one of"),
    (["--set", "structure.matrices=['c_x']"], "structure.matrices: unknown attention matrix 'c_x'"),
    (["--set", "device=cuda"], "device: unknown config key 'device'"),
    (["no-such.toml"], "config file not found: 'no-such.toml'"),
])
def test_curvature_bad_config(capsys, argv, expected):
    """`muonlab curvature` checks the whole config before any run (it used to raise KeyError / TypeError)."""
    line = error_line(capsys, ["curvature", *argv])
    assert line.startswith("muonlab curvature: config error: ") and expected in line


def test_curvature_bad_value_has_the_constructors_message(capsys):
    """An invalid hyperparameter value keeps the constructor's message."""
    line = error_line(capsys, ["curvature", "--set", "optimizers.muon.momentum=2.0"])
    assert line.endswith("optimizers.muon: " + constructor_message(muonlab.Muon, momentum=2.0))


# ------------------------------------------------------------------------------------ perf, probes, list

@pytest.mark.parametrize("argv, expected", [
    (["--d", "-3"], "muonlab perf: config error: --d must be an integer >= 1, got -3"),
    (["--steps", "0"], "muonlab perf: config error: --steps must be an integer >= 1, got 0"),
    (["--only", "zzz"], "muonlab perf: config error: --only 'zzz' matches no candidate"),
    (["--d", "abc"], "muonlab perf: error: argument --d: invalid int value: 'abc'"),
    (["--nproc", "0,2"], "muonlab perf: config error: --nproc must be comma-separated integers >= 1"),
])
def test_perf_bad_options(capsys, argv, expected):
    """`muonlab perf` rejects bad sizes, filters and world sizes before building any tensor."""
    assert error_line(capsys, ["perf", *argv]).startswith(expected)


@NO_CUDA
def test_perf_unavailable_device(capsys):
    """`muonlab perf --device cuda` without CUDA is one line, exit 2."""
    assert "--device: 'cuda' is not available" in error_line(capsys, ["perf", "--device", "cuda"])


def test_probes_bad_names(capsys):
    """`muonlab probes --optimizers` with a typo names the nearest registered optimizer."""
    assert error_line(capsys, ["probes", "--optimizers", "adamw,muom"]) == (
        "muonlab probes: config error: --optimizers: unknown optimizer 'muom'; did you mean 'muon'?")
    assert "empty list" in error_line(capsys, ["probes", "--optimizers", ","])


def test_list_and_top_level(capsys):
    """`muonlab list --bogus`, no subcommand and an unknown subcommand are one-line usage errors."""
    assert error_line(capsys, ["list", "--bogus"]).startswith("muonlab: error: unrecognized arguments: --bogus")
    assert "required" in error_line(capsys, [])
    assert "invalid choice: 'bnech'" in error_line(capsys, ["bnech"])


def test_missing_bench_extra(capsys, monkeypatch):
    """Without matplotlib (a plain `pip install .`), bench and curvature say what to install, exit 1, at once."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    for command in ("bench", "curvature"):
        assert main([command, "--quick"]) == 1
        err = capsys.readouterr().err.strip()
        assert err == f"muonlab {command}: needs the optional package 'matplotlib': pip install \"muonlab[bench]\""
    assert main(["--version"]) == 0  # the other subcommands do not need the extra


def test_version(capsys):
    """`muonlab --version` prints the package version and exits 0."""
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"muonlab {muonlab.__version__}"


def test_end_to_end_curvature_unknown_optimizer(tmp_path):
    """The reported case through `python -m muonlab`: exit 2, one stderr line, no traceback, nothing written."""
    proc = subprocess.run([sys.executable, "-m", "muonlab", "curvature", "--set", "optimizers.lion.lr=1e-4",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("muonlab curvature: config error: optimizers.lion: unknown optimizer 'lion'")
    assert not any(tmp_path.iterdir())
