"""Which of the three modes a param group runs in, read from what its parameters are.

* ``local``: plain tensors and no ``process_group``: every rank (if there are several) runs the
  whole step on its own; nothing is communicated. This is also the mode of each owner under
  ``ZeroRedundancyOptimizer``.
* ``replicated``: plain tensors plus ``process_group=`` on the optimizer (DDP): gradients are
  already averaged, every rank holds whole matrices; each matrix is orthogonalized by one owner.
* ``sharded``: DTensor parameters (FSDP2 ``fully_shard``, HSDP): one ``Shard`` placement on a
  matrix dim; matrices are assembled on their owners with ``all_to_all``.

Plain tensors are never distributed on a guess: with pipeline stages, ranks hold different
parameters and collectives would deadlock.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

MODES = ("local", "replicated", "sharded")


def dtensor_module() -> Any:
    """``torch.distributed.tensor``, imported on first use (it costs ~0.6 s, and plain runs never need it)."""
    import torch.distributed.tensor as dt

    return dt


def is_dtensor(t: Any) -> bool:
    # A DTensor can only exist once its module is imported, so plain runs never import it here.
    mod = sys.modules.get("torch.distributed.tensor")
    return mod is not None and isinstance(t, mod.DTensor)


def local(t: Tensor) -> Tensor:
    """The tensor this rank holds: ``t.to_local()`` for a DTensor, else ``t``."""
    return t.to_local() if is_dtensor(t) else t


def as_process_group(group: Any) -> dist.ProcessGroup | None:
    """``process_group=`` as given to an optimizer: a ``ProcessGroup``, a 1-D ``DeviceMesh`` or None."""
    if group is None:
        return None
    if hasattr(group, "get_group") and hasattr(group, "ndim"):  # DeviceMesh
        if group.ndim != 1:
            raise ValueError(
                f"process_group={group!r}: a {group.ndim}-D DeviceMesh is ambiguous; pass the 1-D sub-mesh of the "
                "data-parallel (or shard) dimension, e.g. mesh['shard']"
            )
        return group.get_group()
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("process_group was given but torch.distributed is not initialized")
    if not isinstance(group, dist.ProcessGroup):
        raise ValueError(f"process_group={group!r}: expected a torch.distributed ProcessGroup or a 1-D DeviceMesh")
    return group


def group_ranks(group: dist.ProcessGroup) -> tuple[int, ...]:
    return tuple(dist.get_process_group_ranks(group))


@dataclass(frozen=True)
class Sharding:
    """How one DTensor parameter is laid out, in terms of its matrix view.

    Attributes:
        kind: ``"rows"`` / ``"cols"`` (the matrix is split across the shard group along that
            axis), ``"batch"`` (a ``batch_3d`` stack split over its matrices: each matrix whole),
            ``"replicated"`` (no Shard placement: whole everywhere) or ``"elementwise"`` (an AdamW
            parameter: any placement, the maths is elementwise).
        mesh: the parameter's DeviceMesh.
        placements: the parameter's placements.
        mesh_dim: the mesh dim of the Shard placement (None without one).
    """

    kind: str
    mesh: Any
    placements: tuple
    mesh_dim: int | None

    @property
    def group(self) -> dist.ProcessGroup | None:
        return None if self.mesh_dim is None else self.mesh.get_group(self.mesh_dim)

    def shard_groups(self) -> list[dist.ProcessGroup]:
        """The process group of every mesh dim that splits this parameter (its ranks hold different parts)."""
        Shard = dtensor_module().Shard
        return [self.mesh.get_group(i) for i, pl in enumerate(self.placements) if isinstance(pl, Shard)]

    @property
    def matrix_dim(self) -> int | None:
        return {"rows": -2, "cols": -1}.get(self.kind)

    def key(self) -> tuple:
        return (self.kind, id(self.mesh), self.placements)


def sharding_of(p: Tensor, group: dict[str, Any], batch_3d: bool) -> Sharding:
    """Classify a DTensor parameter; raise ``NotImplementedError`` for layouts v1 does not support."""
    Replicate, Shard = dtensor_module().Replicate, dtensor_module().Shard
    algorithm = group["algorithm"]
    placements = tuple(p.placements)
    for pl in placements:
        if not isinstance(pl, (Shard, Replicate)):
            raise NotImplementedError(
                f"parameter of shape {tuple(p.shape)} has placement {pl!r}: muonlab supports Shard and Replicate "
                "placements (FSDP2 / HSDP); strided or partial placements (FSDP2 + tensor parallelism) are not supported"
            )
    if algorithm == "adamw":
        return Sharding("elementwise", p.device_mesh, placements, None)
    shards = [(i, pl) for i, pl in enumerate(placements) if isinstance(pl, Shard)]
    if not shards:
        return Sharding("replicated", p.device_mesh, placements, None)
    if len(shards) > 1:
        raise NotImplementedError(
            f"parameter of shape {tuple(p.shape)} is sharded on {len(shards)} mesh dims {placements}: an orthogonalized "
            "matrix may be sharded on one mesh dim only (FSDP2 / HSDP); tensor parallelism on the same matrix is not "
            "supported"
        )
    mesh_dim, pl = shards[0]
    d = pl.dim % p.dim()
    if batch_3d and p.dim() == 3:
        kind = {0: "batch", 1: "rows", 2: "cols"}[d]
    elif group.get("layout", "out_in") == "in_out":  # stored (in, out): dim 0 holds the columns
        kind = {0: "cols", 1: "rows"}[d]
    else:
        kind = {0: "rows", 1: "cols"}.get(d)
    if kind is None:
        raise NotImplementedError(
            f"parameter of shape {tuple(p.shape)} is sharded on dim {d}: its (out, rest) matrix view can be split only "
            "along dim 0 (rows) or dim 1 (a block of columns)"
        )
    if kind == "cols" and p.dim() > (3 if batch_3d else 2):
        inner = math.prod(p.shape[(3 if batch_3d else 2):])
        if p.shape[d] % p.device_mesh.size(mesh_dim) and inner > 1:
            raise NotImplementedError(
                f"parameter of shape {tuple(p.shape)}: uneven Shard({d}) of a weight whose matrix view flattens "
                "trailing dims is not supported"
            )
    return Sharding(kind, p.device_mesh, placements, mesh_dim)


def resolve(group: dict[str, Any], process_group: dist.ProcessGroup | None) -> str:
    """The mode of a param group (see the module docstring); validates its parameters' layouts."""
    params = group["params"]
    dts = [is_dtensor(p) for p in params]
    if any(dts) and not all(dts):
        raise ValueError(
            "a param group mixes DTensor and plain tensor parameters: shard the whole module with fully_shard, or "
            "put the plain tensors in a group of their own"
        )
    if not any(dts):
        return "replicated" if process_group is not None else "local"
    batch_3d = bool(group.get("batch_3d", False))
    for p in params:
        s = sharding_of(p, group, batch_3d)
        if process_group is not None and s.group is not None and group_ranks(s.group) != group_ranks(process_group):
            raise ValueError(
                f"process_group (ranks {group_ranks(process_group)}) does not match the shard mesh of a DTensor "
                f"parameter of shape {tuple(p.shape)} (ranks {group_ranks(s.group)}); under FSDP2 the mesh is read "
                "from the parameters, so pass no process_group or the shard sub-mesh"
            )
    return "sharded"


def signature(param_groups: list[dict[str, Any]]) -> list:
    """Static facts every rank must agree on before collectives can line up (shapes, dtypes, algorithms)."""
    return [
        (g["algorithm"], [(tuple(p.shape), str(p.dtype)) for p in g["params"]]) for g in param_groups
    ]


def check_symmetric(param_groups: list[dict[str, Any]], process_group: dist.ProcessGroup) -> None:
    """Raise on every rank if the ranks of ``process_group`` were given different parameters."""
    sig = signature(param_groups)
    world = dist.get_world_size(process_group)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, sig, group=process_group)
    if any(s != sig for s in gathered):
        raise ValueError(
            "process_group was given but the ranks hold different parameters (pipeline stages? ZeroRedundancyOptimizer "
            "passes each rank its own share and must not be given process_group): replicated mode needs the same "
            "parameters, in the same order, on every rank"
        )
