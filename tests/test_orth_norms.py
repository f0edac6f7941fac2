"""Overflow-safe norms (muonlab.orth.norms): plain values in range, true values at 1e+-30, edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from muonlab.orth import norms_bench
from muonlab.orth.norms import WIDEN_MAX_NUMEL, max_abs, pow2_scale, safe_norm, scaled_norm, widened_dtype

DIMS = [(-2, -1), -2, -1]


@pytest.mark.parametrize("dim", DIMS)
def test_in_range_the_forms_equal_their_plain_formulas(dim):
    """Widened (fp32 input): the fp64 norm rounded once. Scaled (fp64 input, or called directly): a power-of-two
    scale is exact, so in range it is bitwise the plain norm it computes with: vector_norm over the last dim,
    sqrt(sum x^2) over the columns (each within 2 ulps of the other)."""
    X = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(0))
    dims = (dim,) if isinstance(dim, int) else dim
    got = safe_norm(X, dim)
    assert got.dtype == torch.float32
    assert torch.equal(got, X.double().square().sum(dim).sqrt().float())
    want64 = X.double().square().sum(dim).sqrt()
    torch.testing.assert_close(safe_norm(X, dim, dtype=torch.float64), want64, rtol=1e-15, atol=0)
    for Y in (X, X.double()):  # the scaled form: fp32 (devices without fp64) and fp64
        plain = torch.linalg.vector_norm(Y, dim=dim) if dim != -2 else Y.square().sum(dim).sqrt()
        assert torch.equal(scaled_norm(Y, dims), plain)
        torch.testing.assert_close(scaled_norm(Y, dims), Y.square().sum(dim).sqrt(), rtol=2.5e-7, atol=0)
        torch.testing.assert_close(scaled_norm(Y, dims), torch.linalg.vector_norm(Y, dim=dim), rtol=2.5e-7, atol=0)
    assert torch.equal(safe_norm(X.double(), dim), scaled_norm(X.double(), dims))


@pytest.mark.parametrize("scale", [1e30, -1e30, 1e-30, 3e36, 1e-40])
@pytest.mark.parametrize("dim", DIMS)
def test_extreme_scales_give_the_fp64_norm(dim, scale):
    """fp32 entries of 1e30 (squares overflow) or 1e-30 / subnormal 1e-40 (squares underflow): the fp64 value,
    correctly rounded by the widened form and to fp32 rounding by the scaled one; fp64 at 1e+-200 (scaled)."""
    X = (torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * scale).float()
    dims = (dim,) if isinstance(dim, int) else dim
    want = torch.linalg.vector_norm(X.double(), dim=dim)
    torch.testing.assert_close(safe_norm(X, dim).double(), want, rtol=6e-8, atol=2.0**-150)  # half an fp32 ulp
    rtol = 1e-6 if abs(scale) > 1e-38 else 1e-2  # subnormal scaled entries carry few significant bits
    torch.testing.assert_close(scaled_norm(X, dims).double(), want, rtol=rtol, atol=0)
    Z = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    Z = Z * (1e200 if abs(scale) > 1 else 1e-200)  # fp64 squares overflow / underflow: the scaled form
    want = torch.linalg.vector_norm(Z / abs(Z).max(), dim=dim) * abs(Z).max()
    torch.testing.assert_close(safe_norm(Z, dim), want, rtol=1e-14, atol=0)


def test_plain_norms_fail_where_safe_norm_does_not():
    """The failure being fixed: fp32 vector_norm is inf at 1e30 and 0 at 1e-30."""
    X = torch.full((4, 4), 1e30)
    assert torch.isinf(torch.linalg.vector_norm(X)) and safe_norm(X, (-2, -1)).item() == pytest.approx(4e30, rel=1e-6)
    Y = torch.full((4, 4), 1e-30)
    assert torch.linalg.vector_norm(Y).item() == 0.0 and safe_norm(Y, (-2, -1)).item() == pytest.approx(4e-30, rel=1e-6)


def test_edge_cases():
    """Zeros stay 0, inf gives inf, NaN gives NaN, beyond fp32's max gives inf, empty shards reduce to 0."""
    assert torch.equal(safe_norm(torch.zeros(2, 3, 3), (-2, -1)), torch.zeros(2))
    assert safe_norm(torch.tensor([[math.inf, 1.0]]), -1).item() == math.inf
    assert math.isnan(safe_norm(torch.tensor([[math.nan, 1.0]]), -1).item())
    assert safe_norm(torch.tensor([[3e38, 3e38]]), -1).item() == math.inf  # the true norm 4.2e38 is not fp32
    assert torch.equal(safe_norm(torch.empty(2, 3, 0), (-2, -1)), torch.zeros(2))
    assert safe_norm(torch.randn(3, 4), (-2, -1), keepdim=True).shape == (1, 1)
    for dims in [(-2, -1), (-2,), (-1,)]:  # the scaled form too
        assert torch.equal(scaled_norm(torch.zeros(2, 3, 3), dims), torch.zeros(2, *[3] * (2 - len(dims))))
        assert scaled_norm(torch.tensor([[math.inf, 1.0]]), dims).max().item() == math.inf
        assert math.isnan(scaled_norm(torch.tensor([[math.nan, 1.0]]), dims).max().item())
    assert scaled_norm(torch.tensor([[3e38, 3e38]]), (-1,)).item() == math.inf
    # bf16 / fp16 widen too: 300 in fp16 squares to inf there (max 65504)
    assert safe_norm(torch.full((2, 2), 300.0, dtype=torch.float16), (-2, -1)).item() == 600.0
    assert widened_dtype(torch.zeros(1, dtype=torch.bfloat16)) == torch.float64 == widened_dtype(torch.zeros(1))
    assert widened_dtype(torch.zeros(1, dtype=torch.float64)) == torch.float64
    big = torch.zeros(WIDEN_MAX_NUMEL + 1)  # above the size limit: the scaled form, in the input's dtype
    assert widened_dtype(big) == torch.float32 and torch.equal(safe_norm(big, -1), scaled_norm(big, (-1,)))


def test_pow2_scale_and_max_abs():
    """2^-e with max in [0.5, 1), capped for subnormals, 1 for 0 / inf; max_abs == abs().amax() with NaN kept."""
    a = torch.tensor([0.75, 1.0, 3e38, 1e-45, 0.0, math.inf, math.nan])
    s = pow2_scale(a)
    assert torch.equal(s[:2], torch.tensor([1.0, 0.5])) and s[4] == 1 and s[5] == 1 and s[6] == 1
    d = pow2_scale(torch.tensor([5e-324, 1e300, math.nan], dtype=torch.float64))  # fp64: capped at 2^1022
    assert d[0] == 2.0**1022 and 0.5 <= 1e300 * d[1].item() < 1 and d[2] == 1
    assert 0.5 <= (a[2] * s[2]).item() < 1 and torch.isfinite(s[3]) and s[3] == 2.0**126
    X = torch.randn(4, 5, 6)
    for d in DIMS:
        assert torch.equal(max_abs(X, d), X.abs().amax(d))
    assert math.isnan(max_abs(torch.tensor([1.0, math.nan, -2.0]), 0).item())


def test_norms_bench_runs():
    """python -m muonlab.orth.norms_bench: every case timed (structure only, no timing assertions)."""
    rows = norms_bench.run(k=2, m=8, n=4, repeats=1)
    assert len(rows) == 8 and all(ms >= 0 for _, ms in rows)
    forms = norms_bench.forms(shapes=[(2, 8, 4), (1, 3, 5)], repeats=1)  # --forms: both forms of each reduction
    assert [shape for shape, _ in forms] == [(2, 8, 4), (1, 3, 5)]
    assert all(set(t) == {f"{w} {f}" for w in ("columns", "frobenius", "normalize") for f in ("widened", "scaled")}
               and min(t.values()) >= 0 for _, t in forms)
    table = norms_bench.forms_table(forms).splitlines()
    assert len(table) == 2 + 2 + 1 and table[2].startswith("| (2, 8, 4) | 64 |")
    from muonlab.orth import polynomial

    assert polynomial.WIDEN_NORMALIZE_MAX_NUMEL == 1 << 17  # the scaled normalize restored its limit


@pytest.mark.parametrize("scale", [1.0, 1e30, 1e-30])
def test_a_shared_scratch_gives_the_same_norms(scale):
    """safe_norm(scratch=) and Local.norms' shared temporary for same-shape requests are bitwise the plain calls."""
    from muonlab.stages.context import Local

    g = torch.Generator().manual_seed(3)
    X, Y = (torch.randn(3, 8, 5, generator=g) * scale for _ in range(2))
    buf = torch.full_like(X, math.nan, dtype=widened_dtype(X))  # stale contents must not matter
    for d in DIMS:
        assert torch.equal(safe_norm(X, d, scratch=buf), safe_norm(X, d))
        dims = (d,) if isinstance(d, int) else d
        assert torch.equal(scaled_norm(X, dims, scratch=torch.full_like(X, math.nan)), scaled_norm(X, dims))
    Z = torch.randn(4, 3, generator=g)
    shared = Local((8, 5)).norms((X, (-2, -1)), (Y, (-2, -1)), (X, -2), (Z, -1), (Y, -2))
    alone = [safe_norm(X, (-2, -1)), safe_norm(Y, (-2, -1)), safe_norm(X, -2), safe_norm(Z, -1), safe_norm(Y, -2)]
    assert all(torch.equal(a, b) for a, b in zip(shared, alone)) and torch.isfinite(shared[0]).all()
    for d in DIMS + [(0, 2), 1]:  # positive dims too; the shared temporary is overwritten in between
        got = Local((8, 5)).norms((X, d), (Y, d), (X * 2, d))
        assert all(torch.equal(a, safe_norm(W, d)) for a, W in zip(got, [X, Y, X * 2]))
