"""Side-by-side timings of the reductions behind :mod:`muonlab.orth.norms` (``python -m muonlab.orth.norms_bench``).

Prints, for one stack of matrices, the median time of each way to get ``max|x|``, the whole-matrix norm
and the column norms, plain and overflow-safe, interleaved round-robin in one process so that machine
load affects every row alike. The figures behind the choices in ``norms.py`` and the non-finite gate.

``--forms [--device cuda]``: for a range of stack sizes, the widened (fp64) and the scaled form of the
overflow-safe norms and of the orthogonalizers' normalization, side by side: the measurement behind the
size limits ``norms.WIDEN_MAX_NUMEL`` and ``polynomial.WIDEN_NORMALIZE_MAX_NUMEL`` (taken on a CPU; on
GPUs still to be measured).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

from muonlab.orth import polynomial, workspace
from muonlab.orth.norms import WIDEN_MAX_NUMEL, max_abs, safe_norm, scaled_norm, widened_norm


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

    def plain(self, *requests, safe=True, dtype=None):
        return [torch.linalg.vector_norm(X, dim=d, dtype=dtype) for X, d in requests]

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


#: stacks for ``--forms``: from a d = 64 GPT bucket to a d = 2048 one, across both size limits
FORM_SHAPES = ((4, 64, 256), (4, 128, 256), (4, 256, 256), (4, 256, 768), (4, 256, 1024), (12, 768, 768),
               (12, 768, 3072), (4, 2048, 2048))


def _scaled_normalize(X: torch.Tensor) -> torch.Tensor:
    limit = polynomial.WIDEN_NORMALIZE_MAX_NUMEL
    polynomial.WIDEN_NORMALIZE_MAX_NUMEL = -1  # every stack takes the scaled form
    try:
        return polynomial.normalize(X, 1.0, 1e-7, None)
    finally:
        polynomial.WIDEN_NORMALIZE_MAX_NUMEL = limit


def forms(shapes=FORM_SHAPES, device: str = "cpu", repeats: int = 30) -> list[tuple[tuple[int, ...], dict[str, float]]]:
    """Median ms of each form per fp32 stack: ``(shape, {"columns widened": ms, "columns scaled": ms, ...})``.

    Columns and Frobenius are :func:`~muonlab.orth.norms.widened_norm` / :func:`~muonlab.orth.norms.scaled_norm`
    (one tensor each); normalize is the orthogonalizers' ``X / (||X||_F + eps)`` in its two forms. Cases take
    turns call by call, synchronized on GPUs.
    """
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    wide = lambda X: workspace.empty_like(X, torch.float64)  # noqa: E731
    out = []
    for shape in shapes:
        X = torch.randn(shape, device=device)
        cases = {
            "columns widened": lambda: widened_norm(X, (-2,), scratch=wide(X)),
            "columns scaled": lambda: scaled_norm(X, (-2,), scratch=workspace.empty_like(X)),
            "frobenius widened": lambda: widened_norm(X, (-2, -1), scratch=wide(X)),
            "frobenius scaled": lambda: scaled_norm(X, (-2, -1), scratch=workspace.empty_like(X)),
            "normalize widened": lambda: polynomial._normalize_widened(X, 1.0, 1e-7, X.dtype),
            "normalize scaled": lambda: _scaled_normalize(X),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        # Temporaries as inside a step: a pool per case, whose pages stay mapped (a fresh fp64 copy faults them in).
        pools = {name: workspace.Workspace() for name in cases}
        for r in range(repeats + 2):
            for name, fn in cases.items():
                sync()
                t = time.perf_counter()
                with pools[name].session():
                    fn()
                sync()
                if r >= 2:
                    times[name].append(time.perf_counter() - t)
        out.append((tuple(shape), {name: statistics.median(ts) * 1e3 for name, ts in times.items()}))
    return out


def forms_table(rows: list[tuple[tuple[int, ...], dict[str, float]]]) -> str:
    """Markdown: per stack, each form's ms and widened / scaled."""
    head = ["stack", "elements"] + [f"{w} w / s (ms) | ratio" for w in ("columns", "Frobenius", "normalize")]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---|---|---|---|---|---|"]
    for shape, t in rows:
        cells = [f"{shape}", f"{math.prod(shape)}"]
        for what in ("columns", "frobenius", "normalize"):
            w, sc = t[f"{what} widened"], t[f"{what} scaled"]
            cells += [f"{w:.3f} / {sc:.3f}", f"{w / sc:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"Current limits: safe_norm widens up to {WIDEN_MAX_NUMEL} elements, normalize up to "
                 f"{polynomial.WIDEN_NORMALIZE_MAX_NUMEL}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m muonlab.orth.norms_bench", description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="4,1024,256", help="k,m,n of the fp32 stack (default 4,1024,256)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--step", action="store_true", help="also time whole steps (Muon, NAMO, NAMO-D; safe vs plain norms)")
    p.add_argument("--forms", action="store_true", help="instead: the widened and scaled forms across stack sizes")
    p.add_argument("--device", default="cpu", help="device for --forms (default cpu)")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.forms:
        print(f"norm forms on {args.device}, fp32 stacks, torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
        print(forms_table(forms(device=args.device, repeats=args.repeats)))
        return
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
