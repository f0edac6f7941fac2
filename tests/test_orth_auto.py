"""``orth "auto"`` / ``"auto_you"``: per-shape form, equal maths to plain NS, never less accurate than Jordan x5."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import muonlab
import muonlab.orth as orth
from muonlab.orth.accuracy import FAMILIES, family_matrix, rel_error
from muonlab.orth.auto import GRAM_MIN_ASPECT, choose, gram_flops, ns_flops

F64, F32, BF16 = torch.float64, torch.float32, torch.bfloat16


def test_choice_follows_the_aspect_ratio_and_the_validated_dtypes():
    """Square and near-square shapes run NS, aspect >= 2 runs Gram-NS (either orientation) where validated."""
    assert GRAM_MIN_ASPECT == 2.0
    for schedule in ("jordan", "you"):
        assert choose(256, 256, schedule=schedule).method == "newton_schulz"
        assert choose(256, 384, schedule=schedule).method == "newton_schulz"
        for m, n in ((256, 512), (3072, 768), (768, 3072)):
            for dtype in (None, F32, F64):
                c = choose(m, n, dtype=dtype, schedule=schedule)
                assert c.method == "gram_newton_schulz" and c.flops < c.baseline_flops
        assert choose(256, 1024, dtype=torch.float16, schedule=schedule).method == "newton_schulz"
    # Jordan's Gram form in bf16 is 1-4% less accurate than its plain form: bf16 keeps plain NS there.
    assert choose(256, 1024, dtype=BF16).method == "newton_schulz"
    assert choose(256, 1024, dtype=BF16, schedule="you").method == "gram_newton_schulz"
    with pytest.raises(ValueError, match="schedule"):
        choose(8, 16, schedule="cubic")


def test_flop_counts_match_the_closed_forms():
    """Gram-NS x5 with a restart at 2 costs (8a + 28) k^3, NS x5 (20a + 10) k^3."""
    k = 16
    for a in (2, 3, 4, 8):
        assert gram_flops(k, a * k, 5) == (8 * a + 28) * k**3
        assert ns_flops(a * k, k, 5) == (20 * a + 10) * k**3


@pytest.mark.parametrize("name, schedule", [("auto", "jordan"), ("auto_you", "you")])
@pytest.mark.parametrize("shape", [(3, 40, 96), (2, 96, 40), (64, 64), (1, 30, 200)])
def test_auto_equals_plain_newton_schulz_in_fp64(name, schedule, shape):
    """fp64: each entry equals plain NS with its schedule per matrix (Gram form or not) to 1e-12."""
    X = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    Y = orth.resolve(name)(X, 5, None)
    for i, x in enumerate(X.reshape(-1, *shape[-2:])):
        ref = orth.newton_schulz(x, schedule, 5)
        torch.testing.assert_close(Y.reshape(-1, *shape[-2:])[i], ref, rtol=0, atol=1e-12)


def test_auto_takes_the_normalization_eps():
    """``eps`` reaches both forms (TrasMuon's ns_eps): the Gram form equals plain NS with the same eps."""
    X = torch.randn(2, 8, 40, generator=torch.Generator().manual_seed(1), dtype=F64) * 1e-7
    for eps in (1e-7, 1e-8):
        Y = orth.resolve("auto_you")(X, 5, None, eps=eps)
        torch.testing.assert_close(Y, orth.newton_schulz(X, "you", 5, eps=eps), rtol=0, atol=1e-12)
    assert not torch.allclose(orth.resolve("auto")(X, 5, None, eps=1e-7), orth.resolve("auto")(X, 5, None, eps=1e-8))


def test_bf16_auto_is_plain_jordan_bit_for_bit():
    """Where the Gram form is not validated (Jordan in bf16) "auto" runs exactly torch.optim.Muon's polynomial."""
    X = torch.randn(2, 16, 64, generator=torch.Generator().manual_seed(2))
    assert torch.equal(orth.resolve("auto")(X, 5, BF16), orth.newton_schulz(X, "jordan", 5, dtype=BF16))


def test_zero_matrix_maps_to_zero():
    """Zero in, zero out (no NaN), for both forms and both entries."""
    for name in ("auto", "auto_you"):
        for shape in ((16, 16), (8, 40)):
            Y = orth.resolve(name)(torch.zeros(shape), 5, None)
            assert torch.equal(Y, torch.zeros(shape))


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(8, 96), n=st.integers(8, 96), family=st.sampled_from(FAMILIES), seed=st.integers(0, 2**16),
    dtype=st.sampled_from([F64, F32]),
)
def test_auto_never_less_accurate_than_five_jordan_steps(m, n, family, seed, dtype):
    """relF against the exact polar factor, any shape, every input family.

    ``"auto_you"`` is at most Jordan x5's error. ``"auto"`` is Jordan x5 itself, so it matches it up to
    round-off (fp32: 1e-5 in relF, about 100x the largest gap measured at 32-2304 widths; fp64: 1e-12).
    """
    X = family_matrix(family, m, n, seed)
    P = orth.svd_polar(X)
    x = X.to(dtype)
    bound = rel_error(orth.newton_schulz(x, "jordan", 5), P)
    assert rel_error(orth.resolve("auto_you")(x, 5, None), P) <= bound
    slack = 1e-12 if dtype == F64 else 1e-5
    assert rel_error(orth.resolve("auto")(x, 5, None), P) <= bound + slack


@settings(max_examples=12, deadline=None)
@given(m=st.integers(8, 64), n=st.integers(8, 64), family=st.sampled_from(FAMILIES), seed=st.integers(0, 2**16))
def test_auto_you_bound_holds_in_bf16(m, n, family, seed):
    """The bound in bf16 iteration (fp32 input, both sides iterated in bf16)."""
    X = family_matrix(family, m, n, seed)
    P = orth.svd_polar(X)
    x = X.float()
    bound = rel_error(orth.newton_schulz(x, "jordan", 5, dtype=BF16), P)
    assert rel_error(orth.resolve("auto_you")(x, 5, BF16), P) <= bound


def test_muon_default_is_auto_and_says_what_it_picks():
    """Muon's default orthogonalizer is "auto" (Jordan's polynomial), and describe() names the pick per parameter."""
    params = [torch.nn.Parameter(torch.randn(32, 32)), torch.nn.Parameter(torch.randn(96, 32))]
    opt = muonlab.Muon([{"params": params}], ns_dtype="float32")
    assert opt.param_groups[0]["orthogonalizer"] == "auto"
    for p in params:
        p.grad = torch.randn(p.shape)
    opt.step()
    rows = opt.describe().splitlines()[2:]
    assert "auto: ns jordan x5" in rows[0] and "auto: gram jordan x5" in rows[1]
    you = muonlab.Muon([{"params": params}], orthogonalizer="auto_you").describe().splitlines()[3]
    assert "auto_you: gram you x5" in you


def test_default_muon_step_equals_plain_newton_schulz_in_fp64():
    """Muon at its default and with orthogonalizer="newton_schulz" take the same fp64 steps (to 1e-12)."""
    shapes = ((24, 24), (96, 24), (24, 96), (1, 40))
    gen = torch.Generator().manual_seed(3)
    grads = [[torch.randn(s, generator=gen, dtype=F64) for s in shapes] for _ in range(5)]
    runs = []
    for spec in ("auto", "newton_schulz"):
        params = [torch.nn.Parameter(torch.ones(s, dtype=F64)) for s in shapes]
        opt = muonlab.Muon([{"params": params}], orthogonalizer=spec)
        for gs in grads:
            for p, g in zip(params, gs):
                p.grad = g
            opt.step()
        runs.append(params)
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
