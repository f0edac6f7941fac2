"""muonlab.orth: shapes, dtypes, zero inputs, SVD polar, properties, registry, validation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import muonlab.orth as orth
from muonlab.orth.norms import safe_norm

F64 = torch.float64
NS_NAMES = ["jordan", "you", "polar_express", "polar_express_dion", "cubic"]


def gaussian(*shape: int, seed: int = 0, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def exact_polar(X: torch.Tensor) -> torch.Tensor:
    """U V^T from a plain fp64 SVD (full-rank inputs only)."""
    U, _, Vh = torch.linalg.svd(X.to(F64), full_matrices=False)
    return U @ Vh


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("shape", [(40, 40), (30, 70), (70, 30), (1, 9), (9, 1), (1, 1)])
def test_pe8_reaches_polar_factor_on_all_shapes(shape):
    """Square, wide, tall, 1xn, nx1 and 1x1: Polar Express x8 equals U V^T (fp64)."""
    X = gaussian(*shape, seed=sum(shape))
    Y = orth.newton_schulz(X, "polar_express", 8)
    assert Y.shape == X.shape
    assert (Y - exact_polar(X)).abs().max() < 1e-6


def test_row_and_column_vectors_are_normalised():
    """For a 1xn or nx1 input the polar factor is x / ||x||."""
    x = gaussian(1, 17, seed=1)
    assert torch.allclose(orth.newton_schulz(x, "polar_express", 8), x / x.norm(), atol=1e-9)
    assert torch.allclose(orth.newton_schulz(x.T, "polar_express", 8), (x / x.norm()).T, atol=1e-9)


@pytest.mark.parametrize("fn", [orth.newton_schulz, orth.gram_newton_schulz])
def test_batched_equals_loop(fn):
    """Leading dims are a batch: result equals the per-matrix loop, normalisation is per matrix."""
    X = gaussian(2, 3, 24, 40, seed=2) * torch.logspace(-2, 2, 6, dtype=F64).reshape(2, 3, 1, 1)
    Y = fn(X, "you", 5)
    for i in range(2):
        for j in range(3):
            assert (Y[i, j] - fn(X[i, j], "you", 5)).abs().max() < 1e-12


@pytest.mark.parametrize("spec", ["newton_schulz", "you", "polar_express", "gram_newton_schulz", "svd"])
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 6), (1, 5), (5, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, F64])
def test_zero_matrix_maps_to_exact_zero(spec, shape, dtype):
    """Zero matrices give exact zeros, never NaN, in every dtype."""
    Y = orth.resolve(spec)(torch.zeros(shape, dtype=dtype), 5, None)
    assert Y.dtype == dtype and torch.equal(Y, torch.zeros_like(Y))


def test_zero_matrix_with_eps_zero():
    """Even with eps=0 the zero matrix stays zero (denominator guarded)."""
    Y = orth.newton_schulz(torch.zeros(2, 3, 5), "polar_express", eps=0.0)
    assert torch.equal(Y, torch.zeros_like(Y))


# ----------------------------------------------------------------------------- the normalization's two forms
@pytest.mark.parametrize("widened", [True, False])
@pytest.mark.parametrize("scale", [1.0, 1e30, 1e-30])
@pytest.mark.parametrize("shape, transposed", [((3, 6, 10), False), ((2, 12, 5), True)])
def test_normalize_forms_equal_the_fp64_formula(shape, transposed, scale, widened, monkeypatch):
    """X / (s ||X||_F + eps) per matrix. The widened form (small stacks) is the fp64 formula rounded once,
    bitwise; the scaled form (large stacks, forced here) is within an fp32 ulp of it, at any scale and on a
    transposed view; a zero matrix with eps = 0 stays zero in both."""
    from muonlab.orth import polynomial

    if not widened:
        monkeypatch.setattr(polynomial, "WIDEN_NORMALIZE_MAX_NUMEL", 0)
    X = (gaussian(*shape, seed=7) * scale).float()
    X = X.mT.contiguous().mT if transposed else X  # the wide view of a tall stack
    for prescale, eps in [(1.0, 1e-7), (1.02, 0.0)]:
        got = polynomial.normalize(X, prescale, eps, None)
        D = X.double()
        want = D / (prescale * torch.linalg.vector_norm(D, dim=(-2, -1), keepdim=True) + eps)
        assert got.dtype == torch.float32 and got.stride() == X.stride()
        if widened:
            assert torch.equal(got, want.float())
        else:
            torch.testing.assert_close(got.double(), want, rtol=2.5e-7, atol=1e-45 if eps else 0.0)
    zero = polynomial.normalize(torch.zeros(shape), 1.0, 0.0, torch.bfloat16)
    assert zero.dtype == torch.bfloat16 and torch.equal(zero, torch.zeros_like(zero))


# ----------------------------------------------------------------------------- a known norm
@pytest.mark.parametrize("spec", ["newton_schulz", "you", "polar_express", "gram_newton_schulz", "auto", "auto_you"])
@pytest.mark.parametrize("shape", [(3, 12, 12), (2, 30, 9), (2, 9, 30), (1, 5)])
def test_a_known_norm_gives_the_same_result(spec, shape):
    """``norm=||X||_F`` (what NAMO hands over) replaces the normalization's own passes: same polar
    approximation to fp64 rounding, and to fp32 rounding in fp32 (the two normalized inputs differ in
    the last bit, which Polar Express's steep first steps amplify to ~2e-6 at (3, 12, 12), where each
    fp32 result is itself 5-7e-6 off the fp64 one)."""
    fn = orth.resolve(spec)
    X = gaussian(*shape, seed=len(shape))
    norm = torch.linalg.vector_norm(X, dim=(-2, -1))
    assert (fn(X, 5, None, norm=norm) - fn(X, 5, None)).abs().max() < 1e-13
    X32, norm32 = X.float(), norm.float()
    assert (fn(X32, 5, None, norm=norm32) - fn(X32, 5, None)).abs().max() < 4e-6


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_a_known_norm_at_extreme_scales(scale):
    """fp32 entries of 1e30 / 1e-30 with their (overflow-safe) norm: the same result as at scale 1
    (eps = 0, which would otherwise dominate a 1e-30 matrix's norm, as it does without a known norm)."""
    X = gaussian(2, 8, 20, seed=3, dtype=torch.float32)
    want = orth.newton_schulz(X, "jordan", eps=0.0)
    Xs = X * scale
    got = orth.newton_schulz(Xs, "jordan", eps=0.0, norm=safe_norm(Xs, (-2, -1)))
    assert torch.isfinite(got).all() and (got - want).abs().max() < 2e-6


def test_a_known_zero_norm_keeps_zeros():
    """A zero matrix with norm 0 stays zero, with eps = 0 too (the denominator is guarded)."""
    for eps in (1e-7, 0.0):
        Y = orth.newton_schulz(torch.zeros(2, 3, 5), eps=eps, norm=torch.zeros(2))
        assert torch.equal(Y, torch.zeros_like(Y))


def test_empty_inputs():
    """Empty batches and zero-sized sides pass through."""
    for shape in [(0, 4, 6), (3, 0), (0, 3)]:
        assert orth.newton_schulz(torch.zeros(shape)).shape == shape


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("in_dtype", [torch.float32, torch.bfloat16, torch.float16, F64])
@pytest.mark.parametrize("compute", [None, torch.float32, torch.bfloat16])
def test_output_dtype_is_input_dtype(in_dtype, compute):
    """Output has the input's dtype whatever the compute dtype."""
    X = gaussian(12, 20, seed=3, dtype=in_dtype)
    assert orth.newton_schulz(X, "you", dtype=compute).dtype == in_dtype
    assert orth.gram_newton_schulz(X, "you", dtype=compute).dtype == in_dtype
    assert orth.svd_polar(X).dtype == in_dtype


@pytest.mark.parametrize("name", ["jordan", "you", "polar_express", "polar_express_dion"])
def test_bf16_compute_close_to_fp32(name):
    """bf16 iteration stays within 0.03 relF of the fp32 iteration (spec §7.9b: bf16 costs ~0.02 relF)."""
    X = gaussian(128, 512, seed=4, dtype=torch.float32)
    Y16 = orth.newton_schulz(X, name, 5, dtype=torch.bfloat16)
    Y32 = orth.newton_schulz(X, name, 5)
    assert torch.isfinite(Y16).all()
    assert float((Y16 - Y32).norm() / Y32.norm()) < 0.03


def test_normalisation_happens_before_the_cast():
    """A huge fp32 input does not overflow bf16/fp16 compute: the norm is taken in fp32 first."""
    X = gaussian(16, 32, seed=5, dtype=torch.float32) * 1e30
    Y = orth.newton_schulz(X, "you", dtype=torch.float16)
    assert torch.isfinite(Y).all() and float(Y.abs().max()) > 0.1


# ----------------------------------------------------------------------------- SVD polar


def test_svd_polar_is_orthogonal_and_batched():
    """svd_polar gives U V^T: orthonormal rows (wide) / columns (tall), batched."""
    X = gaussian(4, 10, 25, seed=6)
    P = orth.svd_polar(X)
    eye = torch.eye(10, dtype=F64)
    assert (P @ P.mT - eye).abs().max() < 1e-12
    assert (orth.svd_polar(X.mT).mT - P).abs().max() < 1e-12


def test_svd_polar_rank_deficient():
    """Zero singular values map to 0: rank-r input gives a partial isometry with r unit singular values."""
    A, B = gaussian(20, 3, seed=7), gaussian(3, 30, seed=8)
    s = torch.linalg.svdvals(orth.svd_polar(A @ B))
    assert torch.allclose(s[:3], torch.ones(3, dtype=F64), atol=1e-12)
    assert float(s[3:].max()) < 1e-12


# ----------------------------------------------------------------------------- properties


@st.composite
def conditioned(draw):
    """Random m x n (2..48) fp64 matrix with sigma_max/sigma_min <= 100 and random overall scale."""
    m, n = draw(st.integers(2, 48)), draw(st.integers(2, 48))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=F64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=F64))
    sigma = 10 ** (-2 * torch.rand(k, generator=g, dtype=F64))  # in [1e-2, 1]
    return U @ torch.diag(sigma) @ V.T


@settings(max_examples=30, deadline=None)
@given(conditioned())
def test_property_pe8_band(X):
    """sigma_min/sigma_max >= 1e-2 and k <= 48 give normalised sigma >= 1e-2/(1.01*sqrt(48)) > 1e-3 = l0,
    so Polar Express x8 puts every singular value in [0.999, 1.001] (spec §7.9a, lo=1e-3, step 8)."""
    s = torch.linalg.svdvals(orth.newton_schulz(X, "polar_express", 8))
    assert 0.999 <= float(s.min()) and float(s.max()) <= 1.001


@settings(max_examples=30, deadline=None)
@given(conditioned(), st.floats(1e-3, 1e3), st.sampled_from(NS_NAMES))
def test_property_scale_invariance(X, k, name):
    """NS(kX) = NS(X) for k > 0: exactly (to round-off) with eps=0, to 1e-5 with the default eps."""
    Y = orth.newton_schulz(X, name, 5, eps=0.0)
    assert (orth.newton_schulz(k * X, name, 5, eps=0.0) - Y).abs().max() < 1e-10
    Y, Yk = orth.newton_schulz(X, name, 5), orth.newton_schulz(k * X, name, 5)
    # With eps the two inputs are normalised by scalars that differ by the relative amount delta; the
    # output moves by at most delta * max_sigma |sigma P'(sigma)| (P = composed 5-step polynomial),
    # which is <= 210 for every shipped schedule (PE Dion; autograd on a log grid over [1e-5, 1]).
    s, nrm = orth.DEFAULT_PRESCALE[name], float(torch.linalg.norm(X))
    delta = abs((1 / (s * nrm + 1e-7)) / (k / (s * k * nrm + 1e-7)) - 1)
    assert float((Yk - Y).abs().max()) <= 250 * delta + 1e-10


# ----------------------------------------------------------------------------- registry


def test_available_names():
    """available() lists every documented name."""
    assert orth.available() == sorted(
        ["newton_schulz", "jordan", "you", "polar_express", "polar_express_dion", "cubic", "gram_newton_schulz", "svd",
         "turbo_muon", "aol", "auto", "auto_you"]
    )


@pytest.mark.parametrize("name", orth.available())
def test_resolve_names(name):
    """Every registry entry is f(X, steps, dtype) and keeps shape and dtype."""
    f = orth.resolve(name)
    X = gaussian(6, 10, seed=9, dtype=torch.float32)
    Y = f(X, 5, None)
    assert Y.shape == X.shape and Y.dtype == X.dtype and torch.isfinite(Y).all()
    assert f(X, 3, torch.bfloat16).dtype == torch.float32


def test_resolve_semantics():
    """'newton_schulz' is Jordan's quintic; 'svd' ignores steps; spelling is forgiving."""
    X = gaussian(6, 10, seed=10)
    assert torch.equal(orth.resolve("newton_schulz")(X, 5, None), orth.newton_schulz(X, "jordan", 5))
    assert torch.equal(orth.resolve("svd")(X, 1, None), orth.svd_polar(X))
    assert orth.resolve("Polar-Express") is orth.resolve("polar_express")
    assert torch.equal(orth.resolve("gram_newton_schulz")(X, 4, None), orth.gram_newton_schulz(X, "you", 4))
    assert orth.default_restarts(5) == (2,) and orth.default_restarts(8) == (2, 4, 6)
    assert torch.equal(
        orth.resolve("gram_newton_schulz")(X, 8, None), orth.gram_newton_schulz(X, "you", 8, restarts=(2, 4, 6))
    )


def test_resolve_callables():
    """X-only callables are wrapped (steps/dtype ignored); (X, steps, dtype) callables pass through."""
    X = gaussian(3, 4, seed=11)
    f = orth.resolve(lambda X: 2 * X)
    assert torch.equal(f(X, 5, torch.bfloat16), 2 * X)

    def full(X, steps, dtype):
        return X * steps

    assert orth.resolve(full) is full
    with pytest.raises(ValueError, match="callable"):
        orth.resolve(lambda X, steps: X)


def test_resolve_unknown_name_lists_available():
    """Unknown names raise ValueError that lists the available names."""
    with pytest.raises(ValueError, match="polar_express_dion") as info:
        orth.resolve("muon5")
    assert "muon5" in str(info.value)
    with pytest.raises(ValueError):
        orth.resolve(3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(steps=-1), "steps"),
        (dict(steps=2.0), "steps"),
        (dict(schedule="nope"), "schedule"),
        (dict(schedule=[]), "schedule"),
        (dict(schedule=[(1.0, 2.0)]), "schedule"),
        (dict(prescale=0.0), "prescale"),
        (dict(eps=-1.0), "eps"),
        (dict(dtype=torch.int32), "dtype"),
    ],
)
def test_invalid_arguments(kwargs, match):
    """Invalid arguments raise ValueError naming the argument."""
    with pytest.raises(ValueError, match=match):
        orth.newton_schulz(torch.ones(3, 4), **kwargs)


def test_invalid_inputs():
    """1-D and integer inputs are rejected by every kernel."""
    for fn in (orth.newton_schulz, orth.gram_newton_schulz, orth.svd_polar):
        with pytest.raises(ValueError, match="X"):
            fn(torch.ones(5))
        with pytest.raises(ValueError, match="X"):
            fn(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="restarts"):
        orth.gram_newton_schulz(torch.ones(3, 4), restarts=(-1,))


def test_user_schedule_and_prescale():
    """A user list reuses its last entry; prescale defaults to 1.0 for user lists."""
    X = gaussian(8, 12, seed=12)
    sched = [(2.0, -1.5, 0.5), (1.5, -0.5, 0.0)]
    expected = orth.newton_schulz(X, [(2.0, -1.5, 0.5), (1.5, -0.5, 0.0), (1.5, -0.5, 0.0)], 3)
    assert torch.equal(orth.newton_schulz(X, sched, 3), expected)
    assert torch.equal(orth.newton_schulz(X, sched, 3, prescale=1.0), expected)
    assert not torch.equal(orth.newton_schulz(X, sched, 3, prescale=1.05), expected)


def test_accuracy_script_smoke(capsys):
    """`python -m muonlab.orth.accuracy` runs and prints both tables (tiny sizes)."""
    from muonlab.orth import accuracy

    accuracy.main(["--m", "8", "--n", "16", "--steps", "2", "--methods", "you", "gram:polar_express", "--dtypes", "fp64"])
    out = capsys.readouterr().out
    assert "(a) scalar worst case" in out and "| Gaussian 8x16 | gram:polar_express | 2 |" in out
    with pytest.raises(ValueError, match="methods"):
        accuracy.main(["--methods", "nope"])
