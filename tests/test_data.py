"""Tests for muonlab.data: Zipf-PCFG, byte-level text, token shards, windows, the Section-5 quadratic."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from muonlab.data import (
    StructuredQuadratic, TokenShards, ZipfPCFG, fixed_windows, load_text_bytes,
    random_windows, rank_frequency_slope, text_splits, window_batches, zipf_pcfg_splits,
)
from muonlab.data.zipf_pcfg import ZipfPCFGConfig

# --- Zipf-PCFG ---------------------------------------------------------------------------------


def test_zipf_deterministic_for_seed():
    """Same grammar seed and sample seed give the same stream; another sample seed does not."""
    a = ZipfPCFG(seed=3).sample(20_000, seed=1)
    b = ZipfPCFG(seed=3).sample(20_000, seed=1)
    c = ZipfPCFG(seed=3).sample(20_000, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_zipf_valid_ids_and_framing():
    """Ids lie in [0, vocab); the stream is [BOS] sentence [EOS] ... with non-empty sentences."""
    g = ZipfPCFG(vocab_size=300)
    x = g.sample(30_000, seed=0)
    assert x.dtype == torch.long and x.shape == (30_000,)
    assert int(x.min()) >= 0 and int(x.max()) < g.vocab_size == 300
    assert int(x[0]) == g.bos
    is_bos, is_eos = x == g.bos, x == g.eos
    assert torch.equal(is_bos[1:][is_eos[:-1]], torch.ones(int(is_eos[:-1].sum()), dtype=torch.bool))
    assert not bool((is_bos[:-1] & is_eos[1:]).any())  # no empty sentence
    assert g.last_stats["mean_sentence_length"] > 1


@pytest.mark.parametrize("s", [0.0, 0.5, 1.0])
def test_zipf_within_lexicon_slope_matches_exponent(s):
    """Inside a lexicon, log-frequency vs log-rank (the grammar's rank order) has slope ~ -s."""
    g = ZipfPCFG(exponent=s)
    x = g.sample(400_000, seed=0)
    counts = torch.bincount(x, minlength=g.vocab_size).double()
    slopes = []
    for lex in g.lexicons[:5]:
        logr = torch.arange(1, len(lex) + 1, dtype=torch.float64).log()
        logf = counts[lex].clamp(min=1).log()
        logr = logr - logr.mean()
        slopes.append(float((logr * (logf - logf.mean())).sum() / (logr * logr).sum()))
    assert abs(float(np.median(slopes)) + s) < 0.1


def test_zipf_global_imbalance_grows_with_exponent():
    """Global rank-frequency slope (ranks 10..1000) is near -s and steeper for larger s."""
    slopes = [rank_frequency_slope(ZipfPCFG(exponent=s).sample(300_000, seed=0), 10, 1000) for s in (0.0, 0.5, 1.0)]
    assert slopes[0] > slopes[1] > slopes[2]
    assert abs(slopes[2] + 1.0) < 0.2 and abs(slopes[1] + 0.5) < 0.2


def test_zipf_grammar_and_skeleton_fixed_across_exponents():
    """Only emissions depend on s: same fingerprint and the same sentence boundaries for one seed."""
    g0, g1 = ZipfPCFG(exponent=0.0), ZipfPCFG(exponent=1.0)
    assert g0.grammar_fingerprint() == g1.grammar_fingerprint()
    x0, x1 = g0.sample(10_000, seed=5), g1.sample(10_000, seed=5)
    assert torch.equal(x0 == g0.bos, x1 == g1.bos) and torch.equal(x0 == g0.eos, x1 == g1.eos)
    assert not torch.equal(x0, x1)


def test_zipf_splits_cached_and_distinct():
    """train/val streams come from one grammar with different sample seeds."""
    tr, va = zipf_pcfg_splits(5_000, 2_000, exponent=1.0, vocab_size=256, seed=0)
    tr2, _ = zipf_pcfg_splits(5_000, 2_000, exponent=1.0, vocab_size=256, seed=0)
    assert tr is tr2 and tr.numel() == 5_000 and va.numel() == 2_000
    assert not torch.equal(tr[:2000], va)


def test_zipf_config_validation():
    """Bad grammar settings raise ValueError naming the field."""
    with pytest.raises(ValueError, match="exponent"):
        ZipfPCFGConfig(exponent=-1.0)
    with pytest.raises(ValueError, match="vocab_size"):
        ZipfPCFGConfig(vocab_size=5)


# --- text --------------------------------------------------------------------------------------


def test_text_file_and_folder(tmp_path):
    """A file gives its bytes; a folder is read recursively in sorted order, skipping non-UTF-8."""
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text("héllo ")
    (tmp_path / "b" / "c.txt").write_text("world")
    (tmp_path / "z.bin").write_bytes(b"\xff\xfe\x00")
    one = load_text_bytes(tmp_path / "a.txt")
    assert bytes(one.to(torch.uint8).tolist()) == "héllo ".encode()
    both = load_text_bytes(tmp_path)
    assert bytes(both.to(torch.uint8).tolist()) == "héllo world".encode()
    assert bytes(load_text_bytes(tmp_path, max_bytes=3).tolist()) == "héllo".encode()[:3]


def test_text_default_stdlib_corpus():
    """The built-in corpus (stdlib *.py) is non-empty, capped, and byte-valued."""
    data = load_text_bytes(max_bytes=50_000)
    assert data.numel() == 50_000 and int(data.min()) >= 0 and int(data.max()) < 256
    train, val = text_splits(max_bytes=200_000, split_block=1000)
    assert train.numel() + val.numel() == 200_000 and 0.05 < val.numel() / 200_000 < 0.15


def test_text_missing_path_names_it(tmp_path):
    """A missing path raises DataPathError (a ValueError) whose message names the path."""
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match="nope"):
        load_text_bytes(missing)
    with pytest.raises(FileNotFoundError):
        load_text_bytes(missing)


# --- token shards and windows --------------------------------------------------------------------


def _write_shards(root, n_train=1000, n_val=300, vocab=500):
    rng = np.random.default_rng(0)
    rng.integers(0, vocab, n_train, dtype=np.uint16).tofile(root / "train.bin")
    rng.integers(0, vocab, n_val, dtype=np.uint16).tofile(root / "val.bin")


def test_token_shards_windows(tmp_path):
    """Windows read from the uint16 memmap equal the file's contiguous slices; y is x shifted."""
    _write_shards(tmp_path)
    shards = TokenShards(tmp_path)
    ref = np.fromfile(tmp_path / "train.bin", dtype=np.uint16).astype(np.int64)
    assert shards.vocab_size == int(ref.max()) + 1 or shards.vocab_size >= int(ref.max()) + 1
    x, y = random_windows(shards.train, 4, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row in x.numpy():
        starts = [i for i in range(len(ref) - 16) if np.array_equal(ref[i : i + 16], row)]
        assert starts
    val = fixed_windows(shards.val, 2, 3, 8)
    assert len(val) == 2 and val[0][0].shape == (3, 8)


def test_token_shards_meta_vocab(tmp_path):
    """meta.pkl's vocab_size (nanoGPT convention) wins over scanning."""
    _write_shards(tmp_path)
    with open(tmp_path / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": 777}, f)
    assert TokenShards(tmp_path).vocab_size == 777
    assert TokenShards(tmp_path, vocab_size=600).vocab_size == 600


def test_token_missing_path_names_it(tmp_path):
    """Missing folder or shard raises a ValueError naming the path."""
    with pytest.raises(ValueError, match="nothere"):
        TokenShards(tmp_path / "nothere")
    _write_shards(tmp_path)
    (tmp_path / "val.bin").unlink()
    with pytest.raises(ValueError, match="val.bin"):
        TokenShards(tmp_path)


def test_window_batches_deterministic():
    """The batch stream is a function of the seed alone and leaves the global RNG alone."""
    stream = torch.arange(1000)
    state = torch.get_rng_state()
    a, b, c = (window_batches(stream, 4, 8, s) for s in (1, 1, 2))
    for _ in range(3):
        xa, xb, xc = next(a)[0], next(b)[0], next(c)[0]
        assert torch.equal(xa, xb)
    assert not torch.equal(xa, xc)
    assert torch.equal(state, torch.get_rng_state())


# --- the Section-5 quadratic -------------------------------------------------------------------


def _autograd_hessian(prob):
    flat = torch.zeros(prob.d1 * prob.d2, dtype=torch.float64)
    return torch.autograd.functional.hessian(lambda v: prob.loss(v.view(prob.d1, prob.d2)), flat)


@pytest.mark.parametrize("shape", [(5, 5), (6, 4), (3, 7)])
def test_quadratic_grad_hvp_hessian_fp64(shape):
    """grad matches autograd; hvp and hessian() match the autograd Hessian in fp64."""
    prob = StructuredQuadratic(*shape, r=3, seed=1)
    W = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    (g_auto,) = torch.autograd.grad(prob.loss(W), W)
    torch.testing.assert_close(prob.grad(W.detach()), g_auto, rtol=1e-12, atol=1e-12)
    H = _autograd_hessian(prob)
    torch.testing.assert_close(prob.hessian(), H, rtol=1e-10, atol=1e-10)
    V = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(prob.hvp(V).reshape(-1), H @ V.reshape(-1), rtol=1e-10, atol=1e-10)


def test_quadratic_structure():
    """PSD spectrum = eigenvalues(); paired modes carry w_H/w_L; optimum has zero grad and loss."""
    prob = StructuredQuadratic(8, 6, q=5, alpha=0.2, rho=50.0, sigma_ratio=2.0, r=4, seed=2)
    ev = torch.linalg.eigvalsh(prob.hessian())
    torch.testing.assert_close(ev, prob.eigenvalues().flatten().sort().values, rtol=1e-9, atol=1e-9)
    assert float(ev.min()) > -1e-10
    for j, M in enumerate(prob.modes()):
        torch.testing.assert_close(prob.hvp(M), prob.w[j] * M, rtol=1e-9, atol=1e-9)
    assert prob.m == 1 and float(prob.w[0]) == 50.0 and float(prob.w[1]) == 1.0 and float(prob.w[5]) == 0.0
    Ws = prob.optimum()
    assert abs(float(prob.loss(Ws))) < 1e-10 and float(prob.grad(Ws).abs().max()) < 1e-10
    assert float(prob.loss(torch.zeros(8, 6, dtype=torch.float64))) == pytest.approx(prob.const)


def test_quadratic_muon_nds_identity():
    """polar(G) puts equal energy on every mode: NDS = alpha w_H + (1 - alpha) w_L (Theorem 5.5)."""
    prob = StructuredQuadratic(10, 10, alpha=0.2, rho=30.0, sigma_ratio=3.0, seed=0)
    U, _, Vh = torch.linalg.svd(prob.G)
    Z = U @ Vh
    nds = float((Z * prob.hvp(Z)).sum() / (Z * Z).sum())
    assert nds == pytest.approx(prob.alpha * 30.0 + (1 - prob.alpha) * 1.0, rel=1e-10)


def test_quadratic_validation():
    """Bad arguments raise ValueError naming the argument."""
    with pytest.raises(ValueError, match="rho"):
        StructuredQuadratic(4, 4, rho=0.5)
    with pytest.raises(ValueError, match="q"):
        StructuredQuadratic(4, 4, q=9)


def test_zipf_emission_entropy_floor():
    """At s = 0 the floor is the mean log lexicon size over the stream (specials count 0); s = 1 is lower."""
    g = ZipfPCFG(exponent=0.0, vocab_size=512)
    x = g.sample(100_000, seed=0)
    log_size = torch.zeros(g.vocab_size, dtype=torch.float64)
    for lex in g.lexicons:
        log_size[lex] = float(np.log(len(lex)))
    assert g.last_stats["emission_entropy_floor"] == pytest.approx(float(log_size[x].mean()), rel=1e-2)
    g1 = ZipfPCFG(exponent=1.0, vocab_size=512)
    g1.sample(100_000, seed=0)
    assert g1.last_stats["emission_entropy_floor"] < g.last_stats["emission_entropy_floor"]
