"""The distributed step-time benchmark (``muonlab perf --nproc``): measured bytes equal the cost model."""

from __future__ import annotations

import pytest

from muonlab import perf_dist


@pytest.mark.distributed
def test_recorded_bytes_equal_the_cost_model_at_two_ranks():
    """At W=2, record() counts exactly P*b*f (replicated all_gather) and 2*(P/W)*b*f (sharded all_to_all)."""
    d, layers, W = 8, 2, 2
    cfg = perf_dist.Config(
        d=d, layers=layers, steps=1, warmup=0, modes=("replicated", "sharded"), ns_dtype="float32", timeout_s=60
    )
    rows = {(r["optimizer"], r["mode"]): r for r in perf_dist.run(W, cfg)}
    # From the shapes alone: per layer qkv 3d x d, proj d x d, MLP 4d x d and d x 4d; 4 stacks of
    # `layers` matrices each, W divides every count and every row count, so there is no padding.
    P = layers * (3 * d * d + d * d + 4 * d * d + d * 4 * d)
    b, f, stacks = 4, (W - 1) / W, 4  # fp32 on the wire
    for name in ("muon", "namo"):
        rep, sh = rows[(name, "replicated")], rows[(name, "sharded")]
        assert rep["calls"] == {"all_gather": stacks}
        assert rep["bytes"] == rep["bytes_min"] == {"all_gather": P * b * f}
        assert sh["calls"]["all_to_all"] == 2 * stacks
        assert sh["bytes"]["all_to_all"] == sh["bytes_min"]["all_to_all"] == 2 * (P / W) * b * f
        assert rep["sent"] == rep["model"] and sh["sent"] == sh["model"]  # the module's model agrees
    # Sharded steps all_reduce one fp32 count of ranks with non-finite gradients (nonfinite="skip");
    # NAMO adds one packed all_reduce per stack of ||G||^2 and ||M~||^2 (fp64, per matrix: no overflow at 1e30).
    check = 4
    assert rows[("muon", "sharded")]["calls"]["all_reduce"] == 1
    assert rows[("muon", "sharded")]["bytes"]["all_reduce"] == check
    assert rows[("namo", "sharded")]["calls"]["all_reduce"] == 1 + stacks
    assert rows[("namo", "sharded")]["bytes"]["all_reduce"] == check + stacks * layers * 2 * 8
    assert "all_reduce" not in rows[("muon", "replicated")]["calls"]  # replicated grads: a local check
