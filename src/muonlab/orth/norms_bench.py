"""Side-by-side timings of the reductions behind :mod:`muonlab.orth.norms` (``python -m muonlab.orth.norms_bench``).

Prints, for one stack of matrices, the median time of each way to get ``max|x|``, the whole-matrix norm
and the column norms, plain and overflow-safe, interleaved round-robin in one process so that machine
load affects every row alike. The figures behind the choices in ``norms.py`` and the non-finite gate.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

from muonlab.orth.norms import max_abs, safe_norm


def _cases(X: torch.Tensor, grads: list[torch.Tensor]) -> dict[str, Callable[[], object]]:
    return {
        "max|x|: vector_norm(ord=inf)": lambda: torch.linalg.vector_norm(X, ord=math.inf, dim=(-2, -1)),
        "max|x|: max(amax, -amin)": lambda: max_abs(X, (-2, -1)),
        "||X||_F: vector_norm (plain)": lambda: torch.linalg.vector_norm(X, dim=(-2, -1)),
        "||X||_F: safe_norm": lambda: safe_norm(X, (-2, -1)),
        "column norms: vector_norm(dim=-2) (plain)": lambda: torch.linalg.vector_norm(X, dim=-2),
        "column norms: safe_norm": lambda: safe_norm(X, -2),
        "gate: _foreach_norm(ord=inf)": lambda: torch._foreach_norm(grads, ord=math.inf),
        "gate: max(amax, -amin) per tensor": lambda: [max_abs(g, tuple(range(g.dim()))) for g in grads],
    }


def run(k: int = 4, m: int = 1024, n: int = 256, repeats: int = 30, threads: int | None = None) -> list[tuple[str, float]]:
    """Median milliseconds per case on a ``(k, m, n)`` fp32 stack (and its matrices as a gradient list)."""
    if threads is not None:
        torch.set_num_threads(threads)
    X = torch.randn(k, m, n)
    grads = list(X.unbind(0)) + [torch.randn(n) for _ in range(k)]
    cases = _cases(X, grads)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(repeats + 2):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            if r >= 2:  # warm-up
                times[name].append(time.perf_counter() - t)
    return [(name, statistics.median(ts) * 1e3) for name, ts in times.items()]


def step_cost(d: int = 256, layers: int = 2, repeats: int = 12) -> list[tuple[str, float]]:
    """Median ms of a full ``step()`` of Muon, NAMO, NAMO-D (fp32 NS) on GPT-like matrices, and of NAMO
    and NAMO-D with the stack context's norms swapped for plain ``vector_norm`` (what the overflow
    safety costs inside a whole step), interleaved round-robin."""
    import muonlab
    from muonlab.stages import context

    shapes = [s for _ in range(layers) for s in ((3 * d, d), (d, d), (4 * d, d), (d, 4 * d))]

    def build(cls):
        ps = [torch.nn.Parameter(0.02 * torch.randn(*s)) for s in shapes]
        for p in ps:
            p.grad = torch.randn_like(p)
        return cls([{"params": ps}], ns_dtype="float32")

    safe = context.Local.norms

    def plain(self, *requests, safe=True):
        return [torch.linalg.vector_norm(X, dim=d) for X, d in requests]

    opts = {"muon": build(muonlab.Muon), "namo": build(muonlab.NAMO), "namo (plain norms)": build(muonlab.NAMO),
            "namo-d": build(muonlab.NAMOD), "namo-d (plain norms)": build(muonlab.NAMOD)}
    times: dict[str, list[float]] = {name: [] for name in opts}
    try:
        for r in range(repeats + 2):
            for name, opt in opts.items():
                context.Local.norms = plain if "plain" in name else safe
                t = time.perf_counter()
                opt.step()
                if r >= 2:
                    times[name].append(time.perf_counter() - t)
    finally:
        context.Local.norms = safe
    return [(name, statistics.median(ts) * 1e3) for name, ts in times.items()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m muonlab.orth.norms_bench", description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="4,1024,256", help="k,m,n of the fp32 stack (default 4,1024,256)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--step", action="store_true", help="also time whole steps (Muon, NAMO, NAMO-D; safe vs plain norms)")
    args = p.parse_args(argv)
    k, m, n = (int(x) for x in args.shape.split(","))
    rows = run(k, m, n, args.repeats, args.threads)
    width = max(len(name) for name, _ in rows)
    print(f"stack ({k}, {m}, {n}) fp32, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for name, ms in rows:
        print(f"{name:<{width}}  {ms:8.3f} ms")
    if args.step:
        steps = step_cost()
        base = steps[0][1]
        print("step() on GPT-like matrices, d = 256, 2 layers, fp32 Newton-Schulz")
        for name, ms in steps:
            print(f"{name:<{width}}  {ms:8.1f} ms  {ms / base:.3f}x muon")


if __name__ == "__main__":
    main()
