"""``muonlab perf``: the report's structure (never its timings), shape sets, stock baselines, the NS timer."""

from __future__ import annotations

import json
import statistics
import warnings

import pytest
import torch

import muonlab.perf as perf
from muonlab.cli import main
from muonlab.perf import paired_ratio
from muonlab.perf_sets import NAMED, gpt_shapes, resnet18_cifar_shapes, shape_set

COLUMNS = ["optimizer", "ms / step", "vs torch AdamW", "vs torch Muon + AdamW", "vs best stock",
           "vs muonlab.Muon (paired, 95% CI)", "NS share", "NS GFLOP/s", "NS vs GEMM", "state MB", "step peak MB"]


def tiny_model() -> torch.nn.Module:
    """A user model for ``--set tests.test_perf:tiny_model``: embedding, two hidden Linears, a conv, a head."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Embedding(50, 16), torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16),
        torch.nn.Unflatten(-1, (1, 4, 4)), torch.nn.Conv2d(1, 8, 3), torch.nn.Conv2d(8, 8, 1), torch.nn.Flatten(),
        torch.nn.Linear(32, 50),
    )


def test_named_sets_have_the_documented_shapes():
    """GPT-2 widths/depths, embeddings on AdamW, ResNet-18 conv views; every named set builds."""
    hidden, adamw = shape_set("gpt2-small")
    assert len(hidden) == 48 and hidden[:4] == [(2304, 768), (768, 768), (3072, 768), (768, 3072)]
    assert (50257, 768) in adamw and (1024, 768) in adamw
    assert shape_set("gpt2-medium")[0][0] == (3072, 1024) and len(shape_set("gpt2-large", layers=2)[0]) == 8
    assert gpt_shapes(64, 2)[1][-1] == (64,)  # no embeddings without a vocabulary
    hidden, adamw = resnet18_cifar_shapes()
    assert (64, 27) in adamw and (10, 512) in adamw and (512, 9 * 512) in hidden and (128, 64) in hidden
    for name in NAMED:
        h, a = shape_set(name, d=32, layers=1)
        assert h and all(len(s) == 2 for s in h)
    with pytest.raises(ValueError, match="shape set"):
        shape_set("gpt3")


def test_user_model_is_routed():
    """module:callable goes through muonlab.param_groups: hidden Linears and convs as matrix views."""
    hidden, adamw = shape_set("tests.test_perf:tiny_model")
    assert (32, 16) in hidden and (16, 32) in hidden and (8, 8) in hidden
    assert (50, 16) in adamw  # the embedding


def test_stock_ns_in_fp32_is_torchs_algorithm():
    """The fp32 stock baseline computes what torch.optim.Muon's NS computes (checked in fp64 against our NS)."""
    G = torch.randn(40, 24, dtype=torch.float64)
    ours = perf.stock_ns(G, (3.4445, -4.7750, 2.0315), 5, 1e-7, torch.float64)
    import muonlab.orth as orth

    torch.testing.assert_close(ours, orth.newton_schulz(G, "jordan", 5, eps=0.0), rtol=1e-10, atol=1e-10)


def test_report_structure(tmp_path, capsys):
    """The CLI prints one row per candidate with every column, and --json holds the same fields."""
    path = tmp_path / "perf.json"
    only = "torch.optim.AdamW,fp32 NS,muonlab.Muon,muonlab.NAMO,muonlab.AdamW"
    assert main(["perf", "--set", "tests.test_perf:tiny_model", "--steps", "1", "--warmup", "0", "--only", only,
                 "--json", str(path), "--threads", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# set tests.test_perf:tiny_model") and "native bf16" in out[0]
    header = [c.strip() for c in out[2].strip("|").split("|")]
    assert header == COLUMNS
    res = json.loads(path.read_text())
    names = list(res["rows"])
    assert names[0] == "torch.optim.AdamW (foreach)" and "muonlab.Muon orthogonalizer=newton_schulz" in names
    assert len(out) == 4 + len(names) + len(res["errors"])
    for name, r in res["rows"].items():
        assert r["ms"] > 0 and r["state_mb"] > 0
        assert r["vs_adamw"] == pytest.approx(r["ms"] / res["rows"]["torch.optim.AdamW (foreach)"]["ms"])
        assert r["vs_stock_muon"] is None  # the bf16 stock baseline was filtered out
        orthogonalizes = name.startswith("muonlab.Muon") or name.startswith("muonlab.NAMO") or "NS" in name
        assert (r["ns_share"] is not None) == orthogonalizes
        if orthogonalizes:
            assert 0 < r["ns_share"] <= 1 and r["ns_gflops"] > 0 and r["ns_vs_gemm"] > 0
    med, lo, hi = res["rows"]["muonlab.NAMO"]["vs_muon"]
    assert lo <= med <= hi and res["rows"]["muonlab.Muon"]["vs_muon"] == [1.0, 1.0, 1.0]
    best = res["rows"]["torch.optim.Muon + AdamW, fp32 NS"]
    assert best["vs_best_stock"] == pytest.approx(1.0)
    assert res["machine"]["cpu_capability"] and res["machine"]["ns_dtype_auto"] in ("float32", "bfloat16")
    assert res["rows"]["muonlab.AdamW"]["state_mb"] == pytest.approx(res["rows"]["torch.optim.AdamW (foreach)"]["state_mb"])


@pytest.mark.parametrize("native", [False, True])
def test_an_emulated_bf16_stock_row_is_warned_about(native, monkeypatch, capsys):
    """Where bf16 matmuls are emulated, selecting the bf16 stock row (by a substring such as "AdamW") warns that
    it will dominate and disturb the run; with native bf16, or when it is not selected, nothing is said."""
    monkeypatch.setattr(perf, "native_bf16", lambda device_type: native)
    argv = ["perf", "--set", "tests.test_perf:tiny_model", "--steps", "1", "--warmup", "0", "--threads", "1"]
    for only, selected in [("AdamW", True), ("torch.optim.AdamW,muonlab.AdamW", False)]:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            assert main(argv + ["--only", only]) == 0
        assert ("torch.optim.Muon + AdamW (bf16 NS)" in capsys.readouterr().out) is selected
        assert any("no native bf16" in str(w.message) for w in seen) is (selected and not native)


def test_paired_ratio_is_the_median_of_per_round_ratios_with_its_order_statistic_interval():
    """Load that doubles both timings in some rounds cancels; the interval brackets the median at the
    binomial ranks (n = 30: 9th and 22nd of the sorted ratios); mismatched rounds are refused."""
    base = [10.0 * (2 if r % 3 == 0 else 1) for r in range(30)]
    ratios_ = [1.0 + 0.01 * r for r in range(30)]
    times = [b * q for b, q in zip(base, ratios_)]
    med, lo, hi = paired_ratio(times, base)
    assert med == pytest.approx(statistics.median(ratios_))
    assert (lo, hi) == (pytest.approx(ratios_[8]), pytest.approx(ratios_[21]))
    assert paired_ratio([5.0], [2.5]) == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="equally many"):
        paired_ratio([1.0, 2.0], [1.0])


def test_ns_timer_counts_flops_and_restores():
    """NSTimer counts k x K NS FLOPs per call and puts muonlab.orth.resolve back afterwards."""
    import muonlab.orth as orth

    before = orth.resolve
    with perf.NSTimer("cpu") as nt:
        orth.resolve("jordan")(torch.randn(3, 8, 20), 5, None)
    assert orth.resolve is before
    assert nt.flops == 3 * orth.auto.ns_flops(8, 20, 5) and nt.ms > 0


def test_gpu_check_script_parses_and_names_what_exists():
    """scripts/gpu_check.sh (the prepared GPU session): valid bash; its test files and perf sets exist."""
    import pathlib
    import re
    import shutil
    import subprocess

    root = pathlib.Path(__file__).resolve().parents[1]
    script = root / "scripts" / "gpu_check.sh"
    text = script.read_text()
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(script)], check=True)
    files = re.findall(r"tests/test_\w+\.py", text)
    assert files and all((root / f).is_file() for f in files)
    sets = set(re.findall(r"--set ([\w-]+)", text))
    assert sets and sets <= set(NAMED) | {"gpt"}


def test_perf_train_times_the_step_inside_a_training_loop(capsys):
    """`muonlab perf --train`: every optimizer trains its own GPT copy; the table has one row per optimizer with
    positive times, a share in (0, 1) and the base paired against itself at exactly 1; bad options are one line."""
    from muonlab import perf_train
    from muonlab.bench.overrides import ConfigError
    from muonlab.cli import main as cli_main

    res = perf_train.run(["muon", "namo", "ngnm"], d=16, layers=1, heads=2, vocab=32, seq=8, batch=2, rounds=3, warmup=1)
    assert list(res["rows"]) == ["muon", "namo", "ngnm"] and res["base"] == "muon"
    for row in res["rows"].values():
        assert row["step_ms"] > 0 and row["fb_ms"] > 0 and 0 < row["share"] < 1
    assert res["rows"]["muon"]["vs_first"] == (1.0, 1.0, 1.0)
    assert "| namo |" in perf_train.report(res)
    assert cli_main(["perf", "--train", "--d", "16", "--layers", "1", "--heads", "2", "--vocab", "32", "--seq", "8",
                     "--batch", "2", "--rounds", "2", "--warmup", "0", "--optimizers", "muon,adamw"]) == 0
    assert "| adamw |" in capsys.readouterr().out
    for kwargs in (dict(optimizers=["nope"]), dict(optimizers=["muon"], d=30, heads=4), dict(optimizers=["muon"], rounds=0)):
        opts = kwargs.pop("optimizers")
        with pytest.raises(ConfigError):
            perf_train.run(opts, **kwargs)
