"""Accuracy of the shipped orthogonalizers vs steps, measured (``python -m muonlab.orth.accuracy``).

Prints two Markdown tables:

(a) scalar worst case: singular values on a log grid over ``[lo, 1]`` (already normalised)
    pushed through the composed polynomials; exact for any matrix whose normalised
    spectrum lies in ``[lo, 1]`` because the iteration acts on each singular value alone.
(b) matrices: ``min/max`` singular value of the output and the relative Frobenius error
    ``||Y - U V^T||_F / ||U V^T||_F`` against the fp64 SVD polar factor, on a Gaussian
    matrix and on a matrix with log-spaced spectrum in ``[1e-3, 1]``, iterated in fp64,
    fp32 and bf16 (fp32 input, bf16 compute with fp32 normalisation).

References:
    docs/orthogonalizers.md (the tables this script regenerates).
    Amsel et al., "The Polar Express", arXiv 2505.16932, Fig. 2 (same kind of plot).
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Sequence

import torch

from muonlab.orth.gram import default_restarts, gram_newton_schulz
from muonlab.orth.polynomial import newton_schulz
from muonlab.orth.schedules import DEFAULT_PRESCALE, SCHEDULES
from muonlab.orth.svd import svd_polar

F64 = torch.float64
DTYPES = {"fp64": F64, "fp32": torch.float32, "bf16": torch.bfloat16}


def scalar_band(schedule: str, steps: int, lo: float, points: int = 4001) -> tuple[float, float]:
    """Min/max of the composed schedule polynomials over a log grid on ``[lo, 1]`` (fp64).

    The grid is the *normalised* singular values, so the prescale is not applied here
    (the scalar worst case: exact for any matrix, the map acts per singular value).
    """
    x = torch.logspace(torch.log10(torch.tensor(lo)).item(), 0.0, points, dtype=F64)
    triples = SCHEDULES[schedule]
    for t in range(steps):
        a, b, c = triples[min(t, len(triples) - 1)]
        x = a * x + b * x**3 + c * x**5
    return float(x.min()), float(x.max())


def gaussian_matrix(m: int, n: int, seed: int) -> torch.Tensor:
    """i.i.d. N(0, 1) entries, fp64."""
    return torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=F64)


def log_spectrum_matrix(m: int, n: int, seed: int, lo: float = 1e-3) -> torch.Tensor:
    """``U diag(sigma) V^T`` with random orthonormal U, V and sigma log-spaced in ``[lo, 1]``, fp64."""
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=F64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=F64))
    sigma = torch.logspace(torch.log10(torch.tensor(lo)).item(), 0.0, k, dtype=F64)
    return (U * sigma) @ V.T


def measure(X: torch.Tensor, P: torch.Tensor, method: str, steps: int, dtype: str) -> tuple[float, float, float]:
    """Run one orthogonalizer; return (sigma_min, sigma_max, relF vs ``P``), all in fp64."""
    inp = X if dtype == "fp64" else X.float()
    compute = DTYPES[dtype]
    if method.startswith("gram:"):
        Y = gram_newton_schulz(inp, method[5:], steps, restarts=default_restarts(steps), dtype=compute)
    else:
        Y = newton_schulz(inp, method, steps, dtype=compute)
    Y = Y.to(F64)
    s = torch.linalg.svdvals(Y)
    return float(s.min()), float(s.max()), float((Y - P).norm() / P.norm())


def scalar_table(schedules: Sequence[str], steps: Sequence[int], los: Sequence[float]) -> str:
    """Markdown table (a): scalar worst-case band per schedule, lo and step count."""
    head = "| schedule | lo | " + " | ".join(f"{t} steps" for t in steps) + " |"
    rows = [head, "|" + "---|" * (2 + len(steps))]
    for name in schedules:
        for lo in los:
            cells = [f"[{mn:.3f}, {mx:.3f}]" for mn, mx in (scalar_band(name, t, lo) for t in steps)]
            rows.append(f"| {name} | {lo:g} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def matrix_table(
    methods: Sequence[str], steps: Sequence[int], m: int, n: int, seed: int, dtypes: Sequence[str]
) -> str:
    """Markdown table (b): per input, method and step count, ``[min, max] / relF`` per dtype."""
    inputs = {
        f"Gaussian {m}x{n}": gaussian_matrix(m, n, seed),
        "log-spectrum [1e-3, 1]": log_spectrum_matrix(m, n, seed + 1),
    }
    head = "| input | method | steps | " + " | ".join(f"{d}: [σmin, σmax] / relF" for d in dtypes) + " |"
    rows = [head, "|" + "---|" * (3 + len(dtypes))]
    for label, X in inputs.items():
        P = svd_polar(X)
        for method in methods:
            for t in steps:
                cells = []
                for d in dtypes:
                    mn, mx, rel = measure(X, P, method, t, d)
                    cells.append(f"[{mn:.3f}, {mx:.3f}] / {rel:.3f}")
                rows.append(f"| {label} | {method} | {t} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the accuracy tables (Markdown) to stdout."""
    parser = argparse.ArgumentParser(prog="python -m muonlab.orth.accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=int, default=256, help="rows of the test matrices (default 256)")
    parser.add_argument("--n", type=int, default=1024, help="columns of the test matrices (default 1024)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Gaussian matrix; log-spectrum uses seed+1")
    parser.add_argument("--steps", type=int, nargs="+", default=[3, 4, 5, 6, 8], help="step counts (default 3 4 5 6 8)")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[*SCHEDULES, "gram:you", "gram:polar_express"],
        help="schedule names, or gram:<schedule> for Gram Newton-Schulz",
    )
    args = parser.parse_args(argv)
    for name, value in (("--m", args.m), ("--n", args.n)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}")
    if any(t < 0 for t in args.steps):
        raise ValueError(f"--steps must be >= 0, got {args.steps!r}")
    for method in args.methods:
        if method.removeprefix("gram:") not in SCHEDULES:
            raise ValueError(f"--methods entries must be one of {sorted(SCHEDULES)} (optionally gram:), got {method!r}")

    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads; "
          f"prescale per schedule: {DEFAULT_PRESCALE}\n")
    print("(a) scalar worst case over normalised singular values on a log grid in [lo, 1]\n")
    print(scalar_table([s for s in SCHEDULES], args.steps, (1e-3, 1e-2)))
    print(f"\n(b) matrices, {args.m}x{args.n}, seed {args.seed}: output singular values and relF vs fp64 SVD polar\n")
    print(matrix_table(args.methods, args.steps, args.m, args.n, args.seed, args.dtypes))


if __name__ == "__main__":
    main()


#: input families of the "auto" accuracy bound: spread spectra, as momentum-averaged gradients have
FAMILIES = ("gaussian", "log_spectrum", "power_1", "power_half", "low_rank_noise")


def family_matrix(family: str, m: int, n: int, seed: int) -> torch.Tensor:
    """An fp64 ``m x n`` test input of ``family``.

    ``gaussian``: i.i.d. N(0, 1). ``log_spectrum``: singular values log-spaced in [1e-3, 1].
    ``power_1`` / ``power_half``: sigma_i = i^-1 / i^-1/2 (decaying spectra as in trained layers'
    gradients). ``low_rank_noise``: a rank-max(1, k/8) part of scale 10 plus N(0, 0.01) noise. The
    singular vectors of the spectral families are random orthonormal.
    """
    if family == "gaussian":
        return gaussian_matrix(m, n, seed)
    if family == "log_spectrum":
        return log_spectrum_matrix(m, n, seed)
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=F64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=F64))
    i = torch.arange(1, k + 1, dtype=F64)
    if family == "power_1":
        sigma = 1 / i
    elif family == "power_half":
        sigma = i.rsqrt()
    elif family == "low_rank_noise":
        sigma = torch.where(i <= max(1, k // 8), 10.0, 0.0).to(F64)
        return (U * sigma) @ V.T + 0.1 * torch.randn(m, n, generator=g, dtype=F64)
    else:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return (U * sigma) @ V.T


def rel_error(Y: torch.Tensor, P: torch.Tensor) -> float:
    """``||Y - P||_F / ||P||_F`` in fp64."""
    return float((Y.to(F64) - P).norm() / P.norm())
