"""Next-token windows over a 1-D token stream (a LongTensor or a numpy memmap).

``random_windows`` draws contiguous windows at uniformly random offsets from an explicit
``torch.Generator`` (never the global RNG), so a seed fixes the whole batch stream.
``fixed_windows`` gives evenly spaced, non-overlapping windows for a deterministic validation set.

References:
    Karpathy, nanoGPT ``train.py`` ``get_batch`` (random contiguous windows over a token file).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

__all__ = ["DataPathError", "random_windows", "fixed_windows", "window_batches"]

Batch = tuple[torch.Tensor, torch.Tensor]


class DataPathError(FileNotFoundError, ValueError):
    """A data path is missing or unusable; both a ``FileNotFoundError`` and a ``ValueError``."""


def _length(stream: Any) -> int:
    return int(stream.shape[0])


def _gather(stream: Any, starts: torch.Tensor, length: int) -> torch.Tensor:
    """Rows ``stream[s : s + length]`` for every start, as int64 ``(len(starts), length)``."""
    if isinstance(stream, torch.Tensor):
        return stream[starts[:, None] + torch.arange(length)].long()
    import numpy as np  # memmaps only; numpy is not a core dependency

    rows = [np.asarray(stream[s : s + length]) for s in starts.tolist()]
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def _check(stream: Any, batch_size: int, block_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if _length(stream) < block_size + 1:
        raise ValueError(f"token stream of length {_length(stream)} is shorter than block_size + 1 = {block_size + 1}")


def random_windows(stream: Any, batch_size: int, block_size: int, generator: torch.Generator) -> Batch:
    """One batch ``(x, y)`` of shape ``(batch_size, block_size)``; ``y`` is ``x`` shifted by one."""
    _check(stream, batch_size, block_size)
    starts = torch.randint(0, _length(stream) - block_size, (batch_size,), generator=generator)
    rows = _gather(stream, starts, block_size + 1)
    return rows[:, :-1], rows[:, 1:]


def window_batches(stream: Any, batch_size: int, block_size: int, seed: int) -> Iterator[Batch]:
    """Endless deterministic stream of ``random_windows`` batches for ``seed``."""
    _check(stream, batch_size, block_size)
    g = torch.Generator().manual_seed(seed)
    while True:
        yield random_windows(stream, batch_size, block_size, g)


def fixed_windows(stream: Any, n_batches: int, batch_size: int, block_size: int) -> list[Batch]:
    """``n_batches`` batches of evenly spaced windows covering the stream (no RNG involved).

    Windows do not overlap when the stream is long enough; otherwise they are spread evenly
    and may overlap.
    """
    _check(stream, batch_size, block_size)
    if n_batches < 1:
        raise ValueError(f"n_batches must be >= 1, got {n_batches}")
    n = n_batches * batch_size
    last = _length(stream) - block_size - 1
    starts = torch.linspace(0, last, n, dtype=torch.float64).round().long()  # n == 1 gives [0]
    rows = _gather(stream, starts, block_size + 1)
    return [(r[:, :-1], r[:, 1:]) for r in rows.split(batch_size)]
