"""The runnable examples run (at a tiny size)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
