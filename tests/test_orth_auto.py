"""``orth "auto"``: per-shape choice, equal maths to its candidates, never less accurate than Jordan x5."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import muonlab
import muonlab.orth as orth
from muonlab.orth.accuracy import FAMILIES, family_matrix, rel_error
from muonlab.orth.auto import GRAM_MIN_ASPECT, choose, gram_flops, ns_flops

F64 = torch.float64


def test_choice_follows_the_aspect_ratio():
    """Square and near-square shapes run NS, aspect >= 2 runs Gram-NS (either orientation); fp16 stays NS."""
    assert choose(256, 256).method == "newton_schulz"
    assert choose(256, 384).method == "newton_schulz"
    for m, n in ((256, 512), (3072, 768), (768, 3072)):
        c = choose(m, n)
        assert c.method == "gram_newton_schulz" and c.flops < c.baseline_flops
    assert choose(256, 1024, dtype=torch.float16).method == "newton_schulz"
    assert GRAM_MIN_ASPECT == 2.0


def test_flop_counts_match_the_closed_forms():
    """Gram-NS x5 with a restart at 2 costs (8a + 28) k^3, NS x5 (20a + 10) k^3."""
    k = 16
    for a in (2, 3, 4, 8):
        assert gram_flops(k, a * k, 5) == (8 * a + 28) * k**3
        assert ns_flops(a * k, k, 5) == (20 * a + 10) * k**3


@pytest.mark.parametrize("shape", [(3, 40, 96), (2, 96, 40), (64, 64), (1, 30, 200)])
def test_auto_equals_its_pick_in_fp64(shape):
    """fp64: "auto" equals plain NS with You x5 per matrix (Gram or not) to 1e-12."""
    X = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    Y = orth.resolve("auto")(X, 5, None)
    for i, x in enumerate(X.reshape(-1, *shape[-2:])):
        ref = orth.newton_schulz(x, "you", 5)
        torch.testing.assert_close(Y.reshape(-1, *shape[-2:])[i], ref, rtol=0, atol=1e-12)


def test_zero_matrix_maps_to_zero():
    """Zero in, zero out (no NaN), for both picks."""
    for shape in ((16, 16), (8, 40)):
        Y = orth.resolve("auto")(torch.zeros(shape), 5, None)
        assert torch.equal(Y, torch.zeros(shape))


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(8, 96), n=st.integers(8, 96), family=st.sampled_from(FAMILIES), seed=st.integers(0, 2**16),
    dtype=st.sampled_from([F64, torch.float32]),
)
def test_auto_never_less_accurate_than_five_jordan_steps(m, n, family, seed, dtype):
    """relF(auto) <= relF(Jordan x5) against the exact polar factor, any shape, every input family."""
    X = family_matrix(family, m, n, seed)
    P = orth.svd_polar(X)
    x = X.to(dtype)
    bound = rel_error(orth.newton_schulz(x, "jordan", 5), P)
    assert rel_error(orth.resolve("auto")(x, 5, None), P) <= bound


@settings(max_examples=12, deadline=None)
@given(m=st.integers(8, 64), n=st.integers(8, 64), family=st.sampled_from(FAMILIES), seed=st.integers(0, 2**16))
def test_auto_bound_holds_in_bf16(m, n, family, seed):
    """The bound in bf16 iteration (fp32 input, both sides iterated in bf16)."""
    X = family_matrix(family, m, n, seed)
    P = orth.svd_polar(X)
    x = X.float()
    bound = rel_error(orth.newton_schulz(x, "jordan", 5, dtype=torch.bfloat16), P)
    assert rel_error(orth.resolve("auto")(x, 5, torch.bfloat16), P) <= bound


def test_muon_with_auto_says_what_it_picks():
    """Muon(orthogonalizer="auto") steps, and describe() names the pick per parameter."""
    params = [torch.nn.Parameter(torch.randn(32, 32)), torch.nn.Parameter(torch.randn(96, 32))]
    opt = muonlab.Muon([{"params": params}], orthogonalizer="auto")
    for p in params:
        p.grad = torch.randn(p.shape)
    opt.step()
    rows = opt.describe().splitlines()[2:]
    assert "auto: ns you x5" in rows[0] and "auto: gram you x5" in rows[1]
