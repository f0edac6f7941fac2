"""Stack contexts for the two distributed modes (the interface is ``muonlab.stages.context.Local``).

``Replicated`` (DDP): every rank holds the whole stack. Rank ``r`` orthogonalizes its block of
matrices and one ``all_gather_into_tensor`` shares the results; every rank then continues from the
*gathered* copy, its own block included, so the state stays bitwise identical on all ranks.

``Sharded`` (FSDP2 / HSDP): every rank holds a row (or column) slice of every matrix of the stack.

.. code-block:: text

    U_local (k, m_r, n) --pad rows to c = ceil(m / W)--> all_to_all: rank j gets its block of
    matrices from every rank --> drop the padding: (k_j, m, n), exactly the single-process matrices
    --> Orth --> pad, split by rows --> all_to_all back --> O_local (k, m_r, n)

Statistics over a sharded axis are local partial sums plus one packed ``all_reduce`` per call
(several statistics of one stage share it); an order statistic over sharded columns gathers the
vector. Means divide by the global count. State tensors are DTensors with the parameter's mesh and
a placement derived from their axes, so ``torch.distributed.checkpoint`` sees ordinary sharded
(or replicated) state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..stages.base import stat_dtype
from ..stages.context import Dims, Local, _dims
from . import comm
from .modes import Sharding, dtensor_module
from .plan import chunk, offsets


def _join(blocks: Tensor, counts: Sequence[int], per: int) -> Tensor:
    """Rows ``[j*per, j*per + counts[j])`` of ``blocks`` for every rank ``j``, concatenated."""
    if all(c == per for c in counts):
        return blocks
    return torch.cat([blocks[j * per : j * per + c] for j, c in enumerate(counts) if c])


class Replicated(Local):
    """DDP: whole matrices everywhere; each matrix orthogonalized once, by its owner."""

    def __init__(self, shape: tuple[int, ...], group, rank: int, counts: list[int]):
        super().__init__(shape)
        self.group, self.rank, self.counts = group, rank, counts

    def orthogonalize(
        self, fn: Callable[..., Tensor], U: Tensor, steps: int, dtype: torch.dtype, wire: torch.dtype,
        norm: Tensor | None = None,
    ) -> Tensor:
        counts, r = self.counts, self.rank
        per = max(counts)
        start = offsets(counts)[r]
        mine = U[start : start + counts[r]]  # (k_r, m, n)
        kw = {} if norm is None else {"norm": norm[start : start + counts[r]]}
        O = fn(mine, steps, dtype, **kw).to(wire) if counts[r] else mine.to(wire)
        if counts[r] < per:  # all_gather_into_tensor needs the same size on every rank
            O = torch.cat([O, O.new_zeros((per - counts[r], *O.shape[1:]))])
        return _join(comm.all_gather(O, self.group), counts, per).to(U.dtype)


class Sharded(Local):
    """A stack of DTensor parameters: reductions and orthogonalization that span the shards.

    Args:
        shape: global item shape ``(m, n)`` (or the parameter shape for elementwise stacks).
        local_shape: this rank's item shape.
        sharding: the layout shared by every parameter of the stack.
        counts: owner counts of the stack's matrices (matrix-sharded stacks only).
        global_counts: matrices per parameter in the global view (``E`` for a batch_3d stack).
        squeeze: per parameter, whether its state drops the leading count dim.
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        local_shape: tuple[int, ...],
        sharding: Sharding,
        counts: list[int] | None,
        global_counts: list[int],
        squeeze: list[bool],
    ):
        super().__init__(shape)
        self.local_shape, self.sharding, self.counts = tuple(local_shape), sharding, counts
        self.global_counts, self.squeeze = global_counts, squeeze
        self.sharded_dim = sharding.matrix_dim
        self.group = sharding.group if self.sharded_dim is not None else None
        if self.group is not None:
            self.world = sharding.mesh.size(sharding.mesh_dim)
            self.rank = sharding.mesh.get_local_rank(sharding.mesh_dim)

    # -------------------------------------------------------------- reductions
    def _spans(self, dims: Dims) -> bool:
        return self.sharded_dim is not None and self.sharded_dim in {d if d < 0 else d - 3 for d in _dims(dims)}

    def _all_reduce(self, partials: list[Tensor], need: list[bool]) -> list[Tensor]:
        """Sum the partials that need it over the shard group, packed into one collective."""
        idx = [i for i, flag in enumerate(need) if flag]
        if idx:
            dtype = functools.reduce(torch.promote_types, [partials[i].dtype for i in idx])
            flat = comm.all_reduce(torch.cat([partials[i].reshape(-1).to(dtype) for i in idx]), self.group)
            for i, part in zip(idx, flat.split([partials[i].numel() for i in idx])):
                partials[i] = part.view(partials[i].shape).to(partials[i].dtype)
        return partials

    def sums(self, *requests: tuple[Tensor, Dims]) -> list[Tensor]:
        partials = [X.sum(dim=_dims(d)) for X, d in requests]
        return self._all_reduce(partials, [self._spans(d) for _, d in requests])

    def norms(
        self, *requests: tuple[Tensor, Dims], safe: bool = True, dtype: torch.dtype | None = None,
    ) -> list[Tensor]:
        need = [self._spans(d) for _, d in requests]
        # The shards' squared norms are summed in the statistics dtype (fp64): a squared fp32 norm
        # overflows above ~1.8e19, so 1e30 gradients keep their exact norm under sharding too.
        sd = stat_dtype(requests[0][0].device) if requests else None
        norms = super().norms(*requests, safe=safe, dtype=sd)
        partials = [x.square() if flag else x for x, flag in zip(norms, need)]
        out = self._all_reduce(partials, need)
        return [(x.sqrt() if flag else x).to(dtype or X.dtype) for x, flag, (X, _) in zip(out, need, requests)]

    def nanmean_cols(self, x: Tensor) -> Tensor:
        if self.sharded_dim != -1:
            return super().nanmean_cols(x)
        total = torch.nansum(x, dim=-1, keepdim=True)  # (k, 1)
        count = (~torch.isnan(x)).sum(dim=-1, keepdim=True).to(x.dtype)  # (k, 1)
        total, count = self._all_reduce([total, count], [True, True])
        return total / count  # 0 / 0 = NaN for an all-NaN row, as torch.nanmean

    def kthvalue_cols(self, x: Tensor, rank: int) -> Tensor:
        if self.sharded_dim != -1:
            return super().kthvalue_cols(x, rank)
        n, c = self.shape[-1], chunk(self.shape[-1], self.world)
        padded = F.pad(x, (0, c - x.shape[-1])).unsqueeze(0)  # (1, k, c)
        full = comm.all_gather(padded, self.group)  # (W, k, c)
        full = full.permute(1, 0, 2).reshape(x.shape[0], -1)[:, :n]  # (k, n), global column order
        return torch.kthvalue(full, rank, dim=-1).values

    # -------------------------------------------------------------- orthogonalization
    def orthogonalize(
        self, fn: Callable[..., Tensor], U: Tensor, steps: int, dtype: torch.dtype, wire: torch.dtype,
        norm: Tensor | None = None,
    ) -> Tensor:
        if self.group is None:  # whole matrices on this rank (batch-sharded or replicated DTensor)
            return super().orthogonalize(fn, U, steps, dtype, wire, norm)
        W, r, counts, d = self.world, self.rank, self.counts, self.sharded_dim
        m, n = self.shape[-2:]
        c = chunk(self.shape[d], W)
        length = U.shape[d]
        pad = (0, 0, 0, c - length) if d == -2 else (0, c - length)
        mine = counts[r]
        # Forward: block j of my slices goes to rank j; I get my block's slices from every rank.
        got = comm.all_to_all(F.pad(U, pad).to(wire), list(counts), [mine] * W, self.group)  # (W*mine, ., .)
        if d == -2:
            full = got.view(W, mine, c, n).transpose(0, 1).reshape(mine, W * c, n)[:, :m]
        else:
            full = got.view(W, mine, m, c).permute(1, 2, 0, 3).reshape(mine, m, W * c)[..., :n]
        # The norms are global (NAMO's come from all-reduced sums); this rank gets its owned block.
        start = offsets(counts)[r]
        kw = {} if norm is None else {"norm": norm[start : start + mine]}
        O = fn(full.to(U.dtype), steps, dtype, **kw) if mine else full.to(U.dtype)  # (mine, m, n)
        # Back: pad to W chunks along the sharded axis and send chunk s to rank s.
        if d == -2:
            back = F.pad(O, (0, 0, 0, W * c - m)).view(mine, W, c, n).transpose(0, 1)
        else:
            back = F.pad(O, (0, W * c - n)).view(mine, m, W, c).permute(2, 0, 1, 3)
        back = back.reshape(W * mine, *back.shape[2:]).to(wire)
        res = comm.all_to_all(back, [mine] * W, list(counts), self.group)  # (k, c, n) or (k, m, c)
        return res.narrow(d, 0, length).to(U.dtype)

    # -------------------------------------------------------------- state layout
    def state_shape(self, axes: str | None) -> tuple[int, ...]:
        if axes is None and self.sharding.kind == "elementwise":
            return self.local_shape
        axes = "mn" if axes is None else axes
        size = {"1": 1}
        if len(self.local_shape) >= 2:
            size.update(m=self.local_shape[-2], n=self.local_shape[-1])
        return tuple(size[a] for a in axes)

    def _placements(self, axes: str | None, lead: int) -> list:
        Replicate, Shard = dtensor_module().Replicate, dtensor_module().Shard
        kind = self.sharding.kind
        out = []
        for pl in self.sharding.placements:
            if not isinstance(pl, Shard):
                out.append(Replicate())
            elif kind == "elementwise":
                out.append(Shard(pl.dim) if axes is None else Replicate())
            elif kind == "batch":
                out.append(Shard(0))  # the leading matrix-count dim of every state of a batch_3d parameter
            else:
                letter = "m" if kind == "rows" else "n"
                out.append(Shard(lead + axes.index(letter)) if letter in axes else Replicate())
        return out

    def wrap(self, view: Tensor, axes: str | None, j: int) -> Tensor:
        if self.sharding.kind == "elementwise":
            shape = self.shape if axes is None else ()
            lead = 0
        else:
            axes = "mn" if axes is None else axes
            item = tuple({"m": self.shape[-2], "n": self.shape[-1], "1": 1}[a] for a in axes)
            lead = 0 if self.squeeze[j] else 1
            shape = item if self.squeeze[j] else (self.global_counts[j], *item)
        stride = torch.empty(shape, device="meta").stride()
        placements = self._placements(axes, lead)
        return dtensor_module().DTensor.from_local(view, self.sharding.mesh, placements, run_check=False, shape=torch.Size(shape), stride=stride)

    def unwrap(self, t: Tensor) -> Tensor:
        return t.to_local() if isinstance(t, dtensor_module().DTensor) else t
