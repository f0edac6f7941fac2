"""The three collectives the optimizers use, behind one thin wrapper that can count them.

Every collective of ``step()`` goes through here, so a test (or ``muonlab perf``) can count calls
and bytes per step and compare them with the cost model in ``docs/distributed.md``. Bytes are the
payload each rank hands to the collective (``all_reduce``: the buffer; ``all_gather``: the local
input; ``all_to_all``: the local input minus the part a rank keeps for itself). What a rank sends under
ring algorithms is then ``2 (W - 1) / W`` of that (all_reduce), ``W - 1`` times it (all_gather) or
exactly it (all_to_all).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch.distributed as dist
from torch import Tensor


@dataclass
class CommLog:
    """Calls and bytes per collective kind, recorded while :func:`record` is active."""

    calls: Counter = field(default_factory=Counter)
    bytes: Counter = field(default_factory=Counter)

    def add(self, kind: str, nbytes: int) -> None:
        self.calls[kind] += 1
        self.bytes[kind] += int(nbytes)

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


_LOGS: list[CommLog] = []


@contextlib.contextmanager
def record() -> Iterator[CommLog]:
    """Count the optimizer's collectives inside the ``with`` block.

    >>> with muonlab.distributed.record() as log:
    ...     opt.step()
    >>> log.calls["all_to_all"], log.bytes["all_to_all"]
    """
    log = CommLog()
    _LOGS.append(log)
    try:
        yield log
    finally:
        _LOGS.remove(log)


def _log(kind: str, nbytes: int) -> None:
    for log in _LOGS:
        log.add(kind, nbytes)


# torch 2.13 renamed all_gather_into_tensor to all_gather_single (the old name warns).
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def all_reduce(x: Tensor, group: dist.ProcessGroup) -> Tensor:
    """Sum ``x`` over ``group`` in place and return it."""
    _log("all_reduce", _nbytes(x))
    dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
    return x


def all_gather(x: Tensor, group: dist.ProcessGroup) -> Tensor:
    """``(W * d0, ...)``: every rank's ``x`` (same shape everywhere), concatenated in rank order."""
    world = dist.get_world_size(group)
    out = x.new_empty((world * x.shape[0], *x.shape[1:]))
    _log("all_gather", _nbytes(x))
    _all_gather_single(out, x.contiguous(), group=group)
    return out


def all_to_all(x: Tensor, send: list[int], recv: list[int], group: dist.ProcessGroup) -> Tensor:
    """Send ``x[offsets of send[j]]`` (split along dim 0) to rank ``j``; receive ``recv[j]`` rows from it."""
    out = x.new_empty((sum(recv), *x.shape[1:]))
    rank = dist.get_rank(group)
    item = _nbytes(x[0]) if x.shape[0] else 0
    _log("all_to_all", (sum(send) - send[rank]) * item)
    dist.all_to_all_single(out, x.contiguous(), output_split_sizes=recv, input_split_sizes=send, group=group)
    return out
