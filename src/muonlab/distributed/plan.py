"""Who orthogonalizes what: owners balanced by FLOPs, and FSDP2's row/column chunks.

Both distributed modes give every matrix of a stack exactly one owner rank, which runs the
orthogonalizer on it. A stack of ``k`` matrices is split into contiguous blocks, one per rank:
every rank gets ``k // W`` and the ``k % W`` left over go to the ranks with the least work so far
(counted in Newton–Schulz FLOPs, over all stacks of the step, largest matrices first), so that,
say, four stacks of one matrix each on four ranks land on four different ranks. Everything is
computed from static facts (shapes, counts, world size), identically on every rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def ns_flops(m: int, n: int, steps: int) -> int:
    """FLOPs of ``steps`` quintic Newton–Schulz iterations on an ``m x n`` matrix.

    ``2 T k^2 (2K + k)`` with ``k = min(m, n)``, ``K = max(m, n)``: per iteration ``A = X X^T``
    (``2k^2K``), ``B = bA + cA^2`` (``2k^3``) and ``B X`` (``2k^2K``).
    """
    k, K = min(m, n), max(m, n)
    return 2 * steps * k * k * (2 * K + k)


def assign_owners(stacks: Sequence[tuple[int, int]], world: int) -> list[list[int]]:
    """How many matrices of each stack each rank owns.

    Args:
        stacks: ``(k, flops per matrix)`` for every stack of the step, in step order.
        world: number of ranks ``W``.

    Returns:
        For every stack, ``W`` counts summing to its ``k``; rank ``r`` owns the contiguous block
        after the first ``sum(counts[:r])`` matrices.
    """
    load = [0] * world
    counts: list[list[int]] = [[] for _ in stacks]
    order = sorted(range(len(stacks)), key=lambda i: -stacks[i][1])  # stable: ties keep step order
    for i in order:
        k, flops = stacks[i]
        base, extra = divmod(k, world)
        c = [base] * world
        for r in sorted(range(world), key=lambda r: (load[r], r))[:extra]:
            c[r] += 1
        for r in range(world):
            load[r] += c[r] * flops
        counts[i] = c
    return counts


def offsets(counts: Sequence[int]) -> list[int]:
    """Start of every rank's block: ``[0, c0, c0 + c1, ...]`` (without the total)."""
    out, total = [], 0
    for c in counts:
        out.append(total)
        total += c
    return out


def chunk(size: int, world: int) -> int:
    """Rows (or columns) per rank under torch.chunk semantics, FSDP2's layout: ``ceil(size / W)``."""
    return math.ceil(size / world) if size else 0


def chunk_length(size: int, world: int, rank: int) -> int:
    """How many of ``size`` rows rank ``rank`` holds (the last ones may hold fewer, or none)."""
    c = chunk(size, world)
    return max(0, min(c, size - rank * c))
