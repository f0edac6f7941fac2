"""A fresh install: build the wheel, install it into a new virtualenv, use it from outside the source tree.

This is what a user does with ``pip install .``: the wheel is built from a copy of the working
tree's packaging inputs (``pyproject.toml``, ``README.md``, ``src/``), installed with ``--no-deps``
into a new virtualenv that sees the current environment's packages (torch, rich, ...) only through
a ``.pth`` line *after* its own site-packages, and then imported and run from a temporary folder, so
neither the checkout nor the development install can stand in for the wheel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

import muonlab

ROOT = Path(__file__).resolve().parents[1]

# ~75 s of CPU (wheel build, venv, five interpreter starts, a 6-step demo); 200 s wall on the busy 2-core VM
pytestmark = pytest.mark.slow


def sh(*cmd: str | Path, cwd: Path) -> str:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_wheel_installs_and_runs_outside_the_tree(tmp_path):
    """`pip wheel .` + install into a fresh venv: version, `--version`, the script, configs, a tiny demo."""
    t0 = time.perf_counter()
    src = tmp_path / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, ".", cwd=src)
    (wheel,) = wheels.glob("muonlab-*.whl")
    assert wheel.name.startswith(f"muonlab-{muonlab.__version__}-")  # pyproject reads __version__

    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv, cwd=tmp_path)
    py = venv / "bin" / "python"
    site = Path(sh(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip())
    # torch & co. from this environment, searched after the new venv's own site-packages
    (site / "zz_parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    sh(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q", wheel, cwd=tmp_path)

    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    probe = ("import json, muonlab; from muonlab.bench import provenance; "
             "print(json.dumps({'version': muonlab.__version__, 'file': muonlab.__file__, "
             "'code': provenance.code_version()}))")
    info = json.loads(sh(py, "-c", probe, cwd=run_dir))
    assert info["version"] == muonlab.__version__
    assert Path(info["file"]).resolve().is_relative_to(site.resolve())  # the wheel, not the checkout
    # an installed wheel claims no git commit; its cache key rests on the version and the source hash
    assert info["code"]["git_commit"] is None and info["code"]["git_dirty"] is None
    assert len(info["code"]["source_hash"]) == 16

    assert sh(py, "-m", "muonlab", "--version", cwd=run_dir).strip() == f"muonlab {muonlab.__version__}"
    assert sh(venv / "bin" / "muonlab", "--version", cwd=run_dir).strip() == f"muonlab {muonlab.__version__}"
    listing = sh(py, "-m", "muonlab", "list", cwd=run_dir)
    assert "demo" in listing and str(site) in listing  # the shipped configs travel in the wheel
    # the demo itself, cut to 6 steps and two optimizers: trains, reports, and records no git commit
    sh(py, "-m", "muonlab", "bench", "demo", "--quick", "--optimizers", "adamw,muon", "--set", "steps=6",
       "--no-progress", "--out", "runs", cwd=run_dir)
    report = (run_dir / "runs" / "demo-quick" / "report.md").read_text()
    assert f"muonlab {muonlab.__version__}, git no git checkout" in report
    print(f"wheel build + venv + install + 5 runs: {time.perf_counter() - t0:.1f} s")
