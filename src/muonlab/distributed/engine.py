"""From the buckets of one step to the context each stack runs in.

The shell buckets every group's parameters by matrix view (and, for DTensors, by layout). This
module decides, for all buckets of the step at once, which rank owns which matrices (balanced by
Newton–Schulz FLOPs within each process group) and builds the stack contexts. Everything here is
host-side arithmetic on static facts: the same on every rank, no collectives, no device reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from ..orth import workspace
from ..orth.norms import max_abs
from ..stages.context import Local
from . import comm
from .contexts import Replicated, Sharded
from .modes import Sharding, group_ranks, local
from .plan import assign_owners, chunk_length, ns_flops


@dataclass
class Bucket:
    """Same-shape parameters of one group that travel through the chain as one stack."""

    group: dict[str, Any]
    params: list[Tensor]
    chain: tuple
    mode: str
    sharding: Sharding | None
    shape: tuple[int, ...]  # global item shape
    counts: list[int]  # matrices per parameter, global view
    squeeze: list[bool]
    local_shape: tuple[int, ...]
    local_counts: list[int]
    process_group: dist.ProcessGroup | None = None  # the optimizer's, for replicated mode
    cache_key: tuple = ()
    ctx: Local | None = field(default=None)

    @property
    def owner_group(self) -> dist.ProcessGroup | None:
        """The group whose ranks share this stack's orthogonalization, if any."""
        if self.group["algorithm"] == "adamw":
            return None
        if self.mode == "replicated":
            return self.process_group
        if self.mode == "sharded" and self.sharding.matrix_dim is not None:
            return self.sharding.group
        return None


def check_local_layout(b: Bucket) -> None:
    """FSDP2 splits a dim of size ``s`` into ``ceil(s / W)``-sized chunks; anything else is refused."""
    s = b.sharding
    d = s.matrix_dim
    if d is None:
        return
    W, r = s.mesh.size(s.mesh_dim), s.mesh.get_local_rank(s.mesh_dim)
    want = chunk_length(b.shape[d], W, r)
    if b.local_shape[d] != want:
        raise NotImplementedError(
            f"a DTensor parameter of matrix shape {b.shape} holds {b.local_shape[d]} of {b.shape[d]} "
            f"{'rows' if d == -2 else 'columns'} on rank {r} of {W}, where torch.chunk's layout (FSDP2's) gives "
            f"{want}: only that layout is supported"
        )


def build_contexts(buckets: list[Bucket]) -> None:
    """Set ``b.ctx`` for every bucket of the step (owners balanced per process group)."""
    owned: dict[tuple, list[Bucket]] = {}
    for b in buckets:
        g = b.owner_group
        if g is not None:
            owned.setdefault(group_ranks(g), []).append(b)
    counts: dict[int, list[int]] = {}
    for members in owned.values():
        world = dist.get_world_size(members[0].owner_group)
        stacks = [(sum(b.counts), ns_flops(*b.shape[-2:], b.group.get("ns_steps", 5))) for b in members]
        for b, c in zip(members, assign_owners(stacks, world)):
            counts[id(b)] = c
    for b in buckets:
        if b.mode == "replicated" and id(b) in counts:
            g = b.owner_group
            b.ctx = Replicated(b.shape, g, dist.get_rank(g), counts[id(b)])
        elif b.mode == "sharded":
            check_local_layout(b)
            b.ctx = Sharded(b.shape, b.local_shape, b.sharding, counts.get(id(b)), b.counts, b.squeeze)


#: tensors at least this large get their own reductions in the CPU finite check; smaller ones are packed together
_LARGE = 1 << 16


def _max_abs(grads: list[Tensor]) -> list[Tensor]:
    """Peaks ``max |g|`` that cover every tensor (NaN propagates): one per tensor from one foreach kernel
    on accelerators; on CPU, where ``_foreach_norm(ord=inf)`` is ~9x slower than two vectorized
    reductions (torch 2.13, AVX2), ``max(amax, -amin)`` per large tensor and one over all small ones
    together. Their maximum, and whether all are finite, is the same either way."""
    if grads[0].device.type == "cpu":
        batch = [g.is_cpu and g.numel() < _LARGE for g in grads]
        large = [g for g, b in zip(grads, batch) if not b]
        small = [g for g, b in zip(grads, batch) if b]
        peaks = [max_abs(g, tuple(range(g.dim()))) for g in large]
        # Small tensors (biases, norms, many small matrices) are packed first: one copy of a few
        # elements instead of two reductions' dispatch per tensor (1152 of them for 576 small tensors).
        # One foreach copy per dtype into workspace views that are kept between steps: 576 reshapes
        # and a cat cost 4.5 ms there, the copy 1.5 ms (docs/BENCHMARKS.md).
        for dtype in dict.fromkeys(g.dtype for g in small):
            same = [g for g in small if g.dtype == dtype]
            if len(same) == 1:
                flat = same[0].reshape(-1)
            else:
                flat, parts = workspace.empty_parts([g.shape for g in same], dtype, "cpu")
                torch._foreach_copy_(parts, same)
            peaks.append(max_abs(flat, 0))
        return peaks
    return list(torch._foreach_norm(grads, ord=math.inf))


def finite(buckets: list[Bucket]) -> Tensor | None:
    """0-D bool tensor: every gradient of the step is finite, on every rank that shares a matrix.

    One foreach max-abs reduction over the local gradients (NaN and Inf survive a max), then, when
    matrices are sharded, one ``all_reduce`` of the count of bad ranks per shard group, so that all
    ranks take the same decision. None when no parameter has a gradient.
    """
    # type() is Tensor first: a plain gradient needs no DTensor check (this runs for every parameter, every step)
    grads = [g if type(g) is Tensor else local(g) for b in buckets for g in (p.grad for p in b.params) if g is not None]
    if not grads:
        return None
    device = grads[0].device
    grads = [g for g in grads if g.numel()]  # empty shards: max-abs has no identity
    peaks = [x.to(device) for x in _max_abs(grads)] if grads else []
    # peaks are >= 0, +inf or NaN: `< inf` is False exactly for the non-finite ones (one op; isfinite is four on CPU)
    ok = (torch.stack(peaks) < math.inf).all() if peaks else torch.ones((), dtype=torch.bool, device=device)
    groups = {}
    for b in buckets:
        for g in b.sharding.shard_groups() if b.sharding is not None else ():
            groups.setdefault(group_ranks(g), g)
    if groups:
        bad = (~ok).to(torch.float32).reshape(1)
        for g in groups.values():
            comm.all_reduce(bad, g)
        ok = bad[0] == 0
    return ok
