"""The bench run cache: a finished record is reused only with the same cache key, and says where it came from.

The code-version provider (:func:`muonlab.bench.provenance.code_version`) and the environment
probes are monkeypatched to play "a later commit", "an uncommitted edit", "another torch" and so on;
the tiny regression task of ``tests/test_bench.py`` keeps every experiment under a second.
"""

from __future__ import annotations

import importlib
import io
import json
import subprocess
from pathlib import Path

import pytest
import torch
from rich.console import Console

from muonlab.bench import load_config, provenance, run_experiment, runner
from muonlab.bench import report as report_mod
from muonlab.cli import main
from tests.test_bench import TASKS, TinyTask, read_rows, tiny_config

KEY_FIELDS = {"config", "muonlab", "git_commit", "git_dirty", "source_hash", "torch", "device", "ns_dtype"}


def run(tmp_path: Path, report: bool = False, **kw):
    """The tiny experiment (2 optimizers x 2 lrs + 1 seed each); the report and plots only when asked."""
    cfg = tiny_config(callbacks={})
    cfg["optimizers"]["muon"].pop("ns_dtype")  # "auto": the resolved dtype is part of the key
    return run_experiment(load_config(cfg), tmp_path, tasks=TASKS, progress=False, report=report,
                          console=Console(file=io.StringIO()), **kw)


def patch_code(monkeypatch, **changes) -> None:
    """Make the code-version provider report ``changes`` over the real values."""
    real = provenance.code_version()
    monkeypatch.setattr(provenance, "code_version", lambda: {**real, **changes})


def test_header_records_every_key_field(tmp_path):
    """Each run's config row holds the cache key: config, versions, commit, dirty flag, source hash, device, NS dtype."""
    result = run(tmp_path)
    by_opt = {r.spec.optimizer: read_rows(r.path)[0]["cache_key"] for r in result.runs}
    assert set(by_opt["muon"]) == KEY_FIELDS
    assert by_opt["muon"]["torch"] == torch.__version__ and by_opt["muon"]["device"] == "cpu"
    assert by_opt["muon"]["ns_dtype"] in ("float32", "bfloat16") and by_opt["adamw"]["ns_dtype"] == "n/a"
    assert by_opt["muon"]["config"]["optimizer"] == "muon" and by_opt["muon"]["config"]["hparams"] == {}


def test_reused_when_nothing_changed_and_report_says_from_where(tmp_path):
    """A rerun with the same code and environment reuses every run; the report names date, commit and version."""
    first = run(tmp_path)
    before = TinyTask.streams_started
    second = run(tmp_path, report=True)
    assert TinyTask.streams_started == before and all(r.skipped for r in second.runs)
    assert [r.summary for r in second.runs] == [json.loads(json.dumps(r.summary)) for r in first.runs]
    header = read_rows(second.runs[0].path)[0]
    code = provenance.code_version()
    origin = second.runs[0].origin
    assert header["date"] in origin and f"muonlab {code['muonlab']}" in origin
    assert provenance.short_commit(code["git_commit"], code["git_dirty"]) in origin
    report = (tmp_path / "tiny" / "report.md").read_text()
    assert "**Reused runs**" in report and f"0 trained by this invocation, {len(second.runs)} reused" in report
    assert all(f"`{r.spec.run_id}`: {r.origin}" in report for r in second.runs)


@pytest.mark.parametrize("changes", [
    {"git_commit": "f" * 40},                # a later commit
    {"git_dirty": True, "source_hash": "0" * 16},   # an uncommitted edit
    {"source_hash": "1" * 16},               # same commit and version, other sources (a wheel rebuilt)
    {"muonlab": "9.9.9"},                    # another release
])
def test_code_version_change_invalidates(tmp_path, monkeypatch, changes):
    """After a code-version change every run is trained again, and its record carries the new key."""
    run(tmp_path)
    patch_code(monkeypatch, **changes)
    before = TinyTask.streams_started
    result = run(tmp_path)
    assert not any(r.skipped for r in result.runs)
    assert TinyTask.streams_started == before + len(result.runs)
    assert report_mod.provenance_lines(result)[0].endswith(f"{len(result.runs)} trained by this invocation, 0 reused.")
    for rec in result.runs:
        key = read_rows(rec.path)[0]["cache_key"]
        assert all(key[k] == v for k, v in changes.items())
    again = run(tmp_path)  # and the new records are reused under the new code
    assert all(r.skipped for r in again.runs)


def test_environment_change_invalidates(tmp_path, monkeypatch):
    """Another torch version or another device reruns every run."""
    run(tmp_path)
    monkeypatch.setattr(torch, "__version__", "0.0.1-other")
    assert not any(r.skipped for r in run(tmp_path).runs)
    monkeypatch.setattr(provenance, "device_label", lambda device: "cuda:0 (some GPU)")
    assert not any(r.skipped for r in run(tmp_path).runs)


def test_resolved_ns_dtype_change_invalidates_only_auto_runs(tmp_path, monkeypatch):
    """If "auto" resolves to another Newton–Schulz dtype, runs that use "auto" rerun; AdamW runs are kept."""
    orthogonalize = importlib.import_module("muonlab.stages.orthogonalize")  # the package exports a function too

    first = run(tmp_path)
    resolved = read_rows(next(r.path for r in first.runs if r.spec.optimizer == "muon"))[0]["cache_key"]["ns_dtype"]
    monkeypatch.setattr(orthogonalize, "native_bf16", lambda device_type: resolved != "bfloat16")
    result = run(tmp_path)
    assert {r.spec.optimizer for r in result.runs if not r.skipped} == {"muon"}
    assert {r.spec.optimizer for r in result.runs if r.skipped} == {"adamw"}


def test_fresh_reruns_everything(tmp_path):
    """fresh=True trains every run again although all records are reusable."""
    run(tmp_path)
    before = TinyTask.streams_started
    result = run(tmp_path, fresh=True)
    assert not any(r.skipped for r in result.runs) and TinyTask.streams_started == before + len(result.runs)


def test_record_without_cache_key_is_not_reused(tmp_path):
    """A record written before cache keys existed (no `cache_key` in its config row) is rerun."""
    first = run(tmp_path)
    path = first.runs[0].path
    rows = read_rows(path)
    del rows[0]["cache_key"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert runner.finished_summary(path) is None
    result = run(tmp_path)
    assert [r.path for r in result.runs if not r.skipped] == [path]


def test_finished_summary_checks_the_key_from_the_file_alone(tmp_path, monkeypatch):
    """Without a spec (the curvature runs' call), the key is recomputed from the spec the file records."""
    first = run(tmp_path)
    path = first.runs[0].path
    assert runner.finished_summary(path) is not None
    patch_code(monkeypatch, git_commit="e" * 40)
    assert runner.finished_summary(path) is None


def test_cli_fresh_flag(tmp_path, monkeypatch, capsys):
    """`muonlab bench CONFIG --fresh` reruns; without it the second invocation reuses and says so."""
    import muonlab.bench.validate as validate

    monkeypatch.setattr(validate, "default_tasks", lambda: dict(TASKS))
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('name = "tiny"\nsteps = 6\neval_every = 3\nseeds = [0]\n[task]\nname = "tiny"\n'
                   '[optimizers.adamw]\nlr_grid = [1e-2]\n')
    argv = ["bench", str(cfg), "--out", str(tmp_path / "runs"), "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    before = TinyTask.streams_started
    assert main(argv) == 0
    assert TinyTask.streams_started == before and "1 of 1 runs reused" in capsys.readouterr().out
    assert main([*argv, "--fresh"]) == 0
    assert TinyTask.streams_started == before + 1 and "reused" not in capsys.readouterr().out


def test_source_hash_follows_file_contents(tmp_path):
    """The source hash changes with any source file's content or name, and ignores __pycache__."""
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "c.toml").write_text("steps = 1\n")
    h0 = provenance.source_hash(tmp_path)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "a.py").write_text("junk")
    assert provenance.source_hash(tmp_path) == h0
    (tmp_path / "a.py").write_text("x = 2\n")
    h1 = provenance.source_hash(tmp_path)
    (tmp_path / "configs" / "c.toml").write_text("steps = 2\n")
    assert len({h0, h1, provenance.source_hash(tmp_path)}) == 3


def test_code_version_in_this_checkout():
    """Imported from a git checkout: the commit is HEAD's and the dirty flag is git's view of the package."""
    pkg = provenance.PACKAGE_DIR
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=pkg)
    tracked = subprocess.run(["git", "ls-files", "__init__.py"], capture_output=True, text=True, cwd=pkg)
    if head.returncode != 0 or not tracked.stdout.strip():
        pytest.skip("muonlab is not imported from a git checkout")
    def dirty() -> bool:
        out = subprocess.run(["git", "status", "--porcelain", "--", "."], capture_output=True, text=True, cwd=pkg)
        return bool(out.stdout.strip())

    before = dirty()
    provenance.code_version.cache_clear()
    code = provenance.code_version()
    after = dirty()
    assert code["git_commit"] == head.stdout.strip() and len(code["source_hash"]) == 16
    if before == after:  # a concurrent edit or commit in between would make either answer right
        assert code["git_dirty"] is before
