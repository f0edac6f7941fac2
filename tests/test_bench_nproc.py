"""``muonlab bench --nproc 2``: a data-parallel (DDP, gloo) benchmark end to end through the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

# A tiny regression sweep: one optimizer, one lr, one seed, a dozen steps (a few seconds per rank).
TINY = ["--quick", "--no-progress", "--optimizers", "muon", "--set", "steps=12", "--set", "eval_every=4",
        "--set", "seeds=[0]", "--set", "task.n_train=512", "--set", "task.n_val=256",
        "--set", "optimizers.muon.lr_grid=[0.05]"]


@pytest.mark.distributed
def test_bench_nproc2_end_to_end(tmp_path: Path) -> None:
    """Two gloo ranks: the report states world size 2 (DDP) and the recorded losses are finite and fall."""
    cmd = [sys.executable, "-m", "muonlab", "bench", "regression", "--nproc", "2", "--out", str(tmp_path), *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "regression-quick"
    report = (out / "report.md").read_text()
    assert "world size 2, mode replicated (DDP)" in report
    [record] = out.glob("*.jsonl")  # rank 0 alone writes
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert rows[0]["world_size"] == 2 and rows[0]["mode"] == "replicated (DDP)"
    steps = [r for r in rows if r["type"] == "step"]
    losses = [r["train_loss"] for r in steps if "train_loss" in r]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    vals = [r["val_loss"] for r in steps if "val_loss" in r]
    assert rows[-1]["status"] == "ok" and vals[-1] < vals[0]
