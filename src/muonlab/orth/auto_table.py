"""The accuracy / speed table behind ``"auto"`` and ``"auto_you"`` (``python -m muonlab.orth.auto_table``).

For each shape: what the entry (``--entry``, default ``"auto"``) picks, its FLOPs relative to five Jordan steps, its relative
Frobenius error against the fp64 SVD polar factor next to Jordan x5's on every input family of
``muonlab.orth.accuracy.FAMILIES`` (the worst ratio auto / Jordan must stay <= 1, up to round-off for ``"auto"``, which
is Jordan x5 itself), and the median
wall time of both, measured round-robin in one process (one call each per round, so machine load
hits both alike).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from muonlab.orth.accuracy import FAMILIES, family_matrix, rel_error
from muonlab.orth.auto import auto_orthogonalize, choose, ns_flops
from muonlab.orth.polynomial import newton_schulz
from muonlab.orth.svd import svd_polar

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp64": torch.float64}
SHAPES = ((256, 256), (256, 512), (256, 768), (256, 1024), (128, 1024), (768, 768), (2304, 768), (3072, 768), (768, 3072))


def jordan5(X: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """torch.optim.Muon's orthogonalizer: five Jordan steps (the bound)."""
    return newton_schulz(X, "jordan", 5, dtype=dtype)


#: registry entry -> the schedule it iterates
ENTRIES = {"auto": "jordan", "auto_you": "you"}


def auto5(X: torch.Tensor, dtype: torch.dtype, schedule: str = "jordan") -> torch.Tensor:
    return auto_orthogonalize(X, 5, dtype, schedule=schedule)


def accuracy(
    m: int, n: int, dtype: torch.dtype, seed: int = 0, schedule: str = "jordan",
) -> dict[str, tuple[float, float]]:
    """family -> (relF of Jordan x5, relF of the entry), fp32 input iterated in ``dtype``."""
    out = {}
    for family in FAMILIES:
        X = family_matrix(family, m, n, seed)
        P = svd_polar(X)
        x = X if dtype == torch.float64 else X.float()
        out[family] = (rel_error(jordan5(x, dtype), P), rel_error(auto5(x, dtype, schedule), P))
    return out


def round_robin(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median ms per call of each function, one call of each per round after one warm-up round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds + 1):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r:
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def table(shapes: Sequence[tuple[int, int]], dtype_name: str, rounds: int, batch: int, entry: str = "auto") -> str:
    """Markdown table: one row per shape."""
    dtype, schedule = DTYPES[dtype_name], ENTRIES[entry]
    rows = [
        "| shape (k x m x n) | K/k | auto picks | FLOPs vs Jordan x5 | relF Jordan x5 (gaussian / log-spectrum) | "
        "relF auto (gaussian / log-spectrum) | worst relF auto / Jordan over families | ms Jordan x5 | ms auto | time ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m, n in shapes:
        c = choose(m, n, 5, dtype, schedule)
        acc = accuracy(m, n, dtype, schedule=schedule)
        worst = max(a / j for j, a in acc.values())
        X = torch.randn(batch, m, n, generator=torch.Generator().manual_seed(1))
        if dtype == torch.float64:
            X = X.double()
        t = round_robin({"jordan": lambda: jordan5(X, dtype), "auto": lambda: auto5(X, dtype, schedule)}, rounds)
        g, ls = acc["gaussian"], acc["log_spectrum"]
        rows.append(
            f"| {batch}x{m}x{n} | {max(m, n) / min(m, n):.1f} | {c.label()} | {c.flops / ns_flops(m, n, 5):.2f} | "
            f"{g[0]:.3f} / {ls[0]:.3f} | {g[1]:.3f} / {ls[1]:.3f} | {worst:.3f} | {t['jordan']:.1f} | {t['auto']:.1f} | "
            f"{t['auto'] / t['jordan']:.2f} |"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m muonlab.orth.auto_table", description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="iteration dtype (default fp32)")
    ap.add_argument("--entry", default="auto", choices=list(ENTRIES), help="registry entry (default auto)")
    ap.add_argument("--rounds", type=int, default=5, help="timed round-robin rounds (default 5)")
    ap.add_argument("--batch", type=int, default=1, help="matrices per timed stack (default 1)")
    ap.add_argument("--shapes", nargs="+", default=[f"{m}x{n}" for m, n in SHAPES], help="m x n shapes")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.batch < 1:
        raise ValueError(f"--rounds and --batch must be >= 1, got {args.rounds!r}, {args.batch!r}")
    try:
        shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes]
    except ValueError as err:
        raise ValueError(f"--shapes entries must look like 256x1024, got {args.shapes!r}") from err
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}, dtype {args.dtype}, entry {args.entry}\n")
    print(table(shapes, args.dtype, args.rounds, args.batch, args.entry))


if __name__ == "__main__":
    main()
