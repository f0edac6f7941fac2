"""Turbo-Muon (AOL) rows of the accuracy table and CPU timings (``python -m muonlab.orth.aol_table``).

A separate module from :mod:`muonlab.orth.aol` so that running it as a script does not re-execute a
module the package has already imported.
"""

from __future__ import annotations

import torch

from muonlab.orth.aol import aol_newton_schulz


def main() -> None:
    """``python -m muonlab.orth.aol_table``: Turbo-Muon rows for the accuracy table, and CPU timings.

    Accuracy: the inputs and columns of ``python -m muonlab.orth.accuracy`` table (b) (Gaussian and
    log-spectrum 256x1024, seeds 0 and 1; fp64 / fp32 / bf16 compute; relF vs the fp64 SVD polar
    factor), for AOL x3/x4/x5 next to You x4/x5. Timing: median of 20 calls after 3 warm-ups of
    AOL x4 and You x5 (fp32 input and compute) on a few shapes, as a ratio measured side by side.
    """
    import platform
    import statistics
    import time

    from muonlab.orth.accuracy import DTYPES, gaussian_matrix, log_spectrum_matrix
    from muonlab.orth.polynomial import newton_schulz
    from muonlab.orth.svd import svd_polar

    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads\n")
    print("| input | method | steps | " + " | ".join(f"{d}: [σmin, σmax] / relF" for d in DTYPES) + " |")
    print("|" + "---|" * (3 + len(DTYPES)))
    inputs = {"Gaussian 256x1024": gaussian_matrix(256, 1024, 0), "log-spectrum [1e-3, 1]": log_spectrum_matrix(256, 1024, 1)}
    for label, X in inputs.items():
        P = svd_polar(X)
        for method, steps in (("aol", 3), ("aol", 4), ("aol", 5), ("you", 4), ("you", 5)):
            cells = []
            for name, compute in DTYPES.items():
                inp = X if name == "fp64" else X.float()
                Y = aol_newton_schulz(inp, steps, dtype=compute) if method == "aol" else newton_schulz(inp, "you", steps, dtype=compute)
                Y = Y.to(torch.float64)
                s = torch.linalg.svdvals(Y)
                cells.append(f"[{float(s.min()):.3f}, {float(s.max()):.3f}] / {float((Y - P).norm() / P.norm()):.3f}")
            print(f"| {label} | {method} | {steps} | " + " | ".join(cells) + " |")

    print("\n| stack (k×m×n), fp32 | You ×5 ms | AOL ×4 ms | AOL ×4 / You ×5 |\n|---|---|---|---|")
    for k, m, n in ((1, 256, 1024), (1, 512, 512), (4, 256, 256), (1, 1024, 1024)):
        X = torch.randn(k, m, n)
        calls = {"you": lambda: newton_schulz(X, "you", 5), "aol": lambda: aol_newton_schulz(X, 4)}
        times: dict[str, list[float]] = {"you": [], "aol": []}
        for rep in range(23):  # interleaved, so background load hits both alike; 3 warm-ups
            for name, fn in calls.items():
                t0 = time.perf_counter()
                fn()
                if rep >= 3:
                    times[name].append(time.perf_counter() - t0)
        you, aol = (1e3 * statistics.median(times[name]) for name in ("you", "aol"))
        print(f"| {k}×{m}×{n} | {you:.2f} | {aol:.2f} | {aol / you:.2f} |")


if __name__ == "__main__":
    main()
