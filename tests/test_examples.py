"""The runnable examples run (at a tiny size)."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.distributed
def test_distributed_example_fsdp_with_checkpoint(tmp_path):
    """examples/distributed.py trains under FSDP2 on 2 ranks and writes a DCP checkpoint."""
    cmd = [sys.executable, str(ROOT / "examples" / "distributed.py"), "--mode", "fsdp", "--nproc", "2",
           "--steps", "5", "--ckpt", str(tmp_path / "ckpt")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "fsdp on 2 ranks: loss" in out.stdout
    assert (tmp_path / "ckpt" / ".metadata").exists()


def _example(name: str):
    """Import examples/<name>.py as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nanogpt_example_tiny_learns(capsys):
    """examples/nanogpt.py --tiny trains on the stdlib text: val loss below the uniform-byte loss ln 256."""
    val_loss = _example("nanogpt").main(["--tiny"])
    out = capsys.readouterr().out
    assert "orthogonalized" in out and "muon: val loss" in out  # routing table printed, run finished
    assert math.isfinite(val_loss) and val_loss < math.log(256)


def test_lightning_finetune_example_tiny(tmp_path):
    """examples/lightning_finetune.py --tiny pretrains, fine-tunes, checkpoints, and resumes from last.ckpt."""
    pytest.importorskip("pytorch_lightning")
    module = _example("lightning_finetune")
    metrics = module.main(["--tiny", "--ckpt-dir", str(tmp_path)])
    assert math.isfinite(metrics["val_loss"]) and 0.0 <= metrics["val_acc"] <= 1.0
    assert (tmp_path / "last.ckpt").exists()
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert ckpt["optimizer_states"][0]["muonlab"]["optimizer"] == "Muon"  # muonlab's state went in the checkpoint
    resumed = module.main(["--tiny", "--ckpt-dir", str(tmp_path)])  # max_epochs already reached: restores only
    assert resumed["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-6)


def test_curvature_probe_example_tiny():
    """examples/curvature_probe.py --tiny probes Muon and AdamW: finite rows, within + cross == NDS."""
    results = _example("curvature_probe").main(["--tiny"])
    assert set(results) == {"muon", "adamw"}
    for rows in results.values():
        assert [r["step"] for r in rows] == [0, 2]
        for r in rows:
            assert all(math.isfinite(v) for v in r.values())
            assert r["within"] + r["cross"] == pytest.approx(r["nds"], rel=1e-6, abs=1e-12)
            assert r["gain"] > 0  # the update goes downhill to first order
