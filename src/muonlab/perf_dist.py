"""Distributed step time and communication: local vs replicated (DDP) vs sharded (FSDP2), on gloo.

    python -m muonlab perf --nproc 1,2,4 [--d 256] [--layers 4] [--steps 10] [--optimizers muon,namo]

For every world size ``W`` this spawns ``W`` CPU processes (gloo, one torch thread each), gives each
the hidden matrices of :func:`muonlab.perf.gpt_matrices` with the same gradients, and times
``opt.step()`` in the three modes of :mod:`muonlab.distributed`:

* ``local``: plain tensors, no ``process_group``: every rank does all the work (DDP without
  ``process_group=``);
* ``replicated``: plain tensors + ``process_group=dist.group.WORLD``: each rank orthogonalizes its
  owner block, one ``all_gather`` per stack shares the results;
* ``sharded``: the matrices ``fully_shard``-ed on a 1-D CPU mesh (DTensor ``Shard(0)``): per stack
  one ``all_to_all`` assembles whole matrices on their owners and a second one sends results back.

Reported per mode: step time (max over ranks of each rank's median), what
``muonlab.distributed.record()`` counted in one step (calls and bytes per collective kind), the
cost model beside it (bytes a rank *sends* per step; see :func:`model_bytes`) and the Newton–Schulz
FLOPs per rank predicted by the owner plan (:func:`muonlab.distributed.plan.assign_owners`).
Ranks share the host's cores: with more ranks than cores the timings measure oversubscription.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from . import optim
from .distributed import assign_owners, ns_flops, record
from .perf import gpt_matrices
from .stages.orthogonalize import as_dtype

MODES = ("local", "replicated", "sharded")
#: registry name -> scalars per matrix in the packed statistics all_reduce of a sharded stack
#: (NAMO: ||G||_F^2 and ||M~||_F^2, one reduction; Muon has no statistics).
STATS_PER_MATRIX = {"muon": 0, "namo": 2}
#: bytes per statistic: squared norms travel in fp64 (``muonlab.stages.base.stat_dtype``), so the
#: shards of a 1e30-entry gradient sum without overflow
STAT_BYTES = 8
#: the finite check of a sharded step (``nonfinite="skip"``, the default): one fp32 count of bad
#: ranks, all_reduced once per shard group (``muonlab.distributed.engine.finite``)
FINITE_CHECK_BYTES = 4


@dataclass
class Config:
    """What one benchmark run measures (shared by every rank, so it must pickle)."""

    d: int = 256
    layers: int = 4
    steps: int = 10
    warmup: int = 2
    optimizers: tuple[str, ...] = ("muon", "namo")
    modes: tuple[str, ...] = MODES
    ns_dtype: str = "auto"
    timeout_s: float = 300.0


# ---------------------------------------------------------------------------- cost model
def stacks_of(d: int, layers: int) -> list[tuple[int, int, int]]:
    """``(k, m, n)`` of every stack of the step, in the shell's bucket order (first appearance)."""
    out: dict[tuple[int, ...], int] = {}
    for p in gpt_matrices(d, layers, "cpu", torch.float32):  # the very matrices the ranks step
        out[tuple(p.shape)] = out.get(tuple(p.shape), 0) + 1
    return [(k, m, n) for (m, n), k in out.items()]


def owner_counts(stacks: list[tuple[int, int, int]], world: int, ns_steps: int = 5) -> list[list[int]]:
    """Matrices of each stack per rank, as the plan assigns them (balanced by NS FLOPs)."""
    return assign_owners([(k, ns_flops(m, n, ns_steps)) for k, m, n in stacks], world)


def model_flops(mode: str, stacks: list[tuple[int, int, int]], world: int, ns_steps: int = 5) -> int:
    """Newton–Schulz FLOPs of the busiest rank: ``sum_s k_s F_s`` locally, else its owner blocks."""
    if mode == "local" or world == 1:
        return sum(k * ns_flops(m, n, ns_steps) for k, m, n in stacks)
    counts = owner_counts(stacks, world, ns_steps)
    return max(sum(c[r] * ns_flops(m, n, ns_steps) for c, (_, m, n) in zip(counts, stacks)) for r in range(world))


def model_bytes(mode: str, name: str, stacks: list[tuple[int, int, int]], world: int, wire: int, ns_steps: int = 5) -> dict[str, int]:
    """Bytes the busiest rank *sends* per step, by collective kind (``wire``: bytes per element).

    * replicated: a ring ``all_gather`` sends each rank's block to the ``W - 1`` others:
      ``(W - 1) * max_r(k_r) * m * n * wire`` per stack, ``= P * wire * (W - 1) / W`` when ``W``
      divides every ``k`` (padding otherwise: every rank's block has the largest block's size);
    * sharded (row-sharded, FSDP2's ``Shard(0)``, chunks of ``c = ceil(m / W)`` rows): rank ``r``
      sends its chunk of the ``k - k_r`` matrices it does not own, then ``W - 1`` chunks of each of
      its ``k_r``: ``(k - k_r + (W - 1) k_r) * c * n * wire``, ``= 2 (P / W) wire (W - 1) / W``
      when everything divides; plus the ``all_reduce`` of the statistics and of the finite check
      (one 1-D mesh: one shard group), ring: ``2 (W - 1) / W`` of each buffer (statistics fp64,
      finite check fp32).

    At ``W = 1`` the distributed modes still issue their collectives, each sending nothing: 0.
    """
    if mode == "local":
        return {}
    counts = owner_counts(stacks, world, ns_steps)
    if mode == "replicated":
        return {"all_gather": sum((world - 1) * max(c) * m * n * wire for c, (_, m, n) in zip(counts, stacks))}
    chunk = [-(-m // world) for _, m, _ in stacks]
    a2a = max(
        sum((k - c[r] + (world - 1) * c[r]) * ch * n * wire for c, ch, (k, _, n) in zip(counts, chunk, stacks))
        for r in range(world)
    )
    out = {"all_to_all": a2a}
    buffer = FINITE_CHECK_BYTES + sum(STATS_PER_MATRIX.get(name, 0) * k * STAT_BYTES for k, _, _ in stacks)
    out["all_reduce"] = 2 * (world - 1) * buffer // world
    return out


def sent_bytes(kind: str, payload: int, world: int) -> int:
    """What a rank sends for a ``record()`` payload under ring algorithms.

    ``record()`` counts the payload handed to the collective: the local input of an ``all_gather``
    (sent to each of the ``W - 1`` others), the part of an ``all_to_all`` input that leaves the rank
    (sent once), the buffer of an ``all_reduce`` (a ring sends ``2 (W - 1) / W`` of it).
    """
    factor = {"all_gather": world - 1, "all_to_all": 1, "all_reduce": 2 * (world - 1) / world}[kind]
    return int(payload * factor)


# ---------------------------------------------------------------------------- one rank
def _build(mode: str, name: str, cfg: Config, mesh_cache: dict) -> torch.optim.Optimizer:
    params = gpt_matrices(cfg.d, cfg.layers, "cpu", torch.float32)  # same seed: same data on every rank
    cls = optim.optimizers()[name]
    kwargs = dict(ns_dtype=cfg.ns_dtype)
    if mode == "replicated":
        return cls([{"params": params}], process_group=dist.group.WORLD, **kwargs)
    if mode == "sharded":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor import distribute_tensor

        if "mesh" not in mesh_cache:
            mesh_cache["mesh"] = init_device_mesh("cpu", (dist.get_world_size(),))
        mesh = mesh_cache["mesh"]
        module = torch.nn.Module()
        module.w = torch.nn.ParameterList([torch.nn.Parameter(p.detach().clone()) for p in params])
        fully_shard(module, mesh=mesh)  # parameters become DTensors, Shard(0): FSDP2's row chunks
        for p, full in zip(module.parameters(), params):
            # every rank holds the same full gradient, so each keeps its own chunk (no collective)
            p.grad = distribute_tensor(full.grad, mesh, p.placements, src_data_rank=None)
        return cls([{"params": list(module.parameters())}], **kwargs)
    return cls([{"params": params}], **kwargs)


def _measure(opts: list[torch.optim.Optimizer], cfg: Config) -> list[dict]:
    """Median ms of ``step()`` of every optimizer, and one recorded step of each.

    The optimizers take turns, one step each per round, so that a change in the host's load during
    the run hits every mode alike (DESIGN.md: timings side by side). Ranks start each step together.
    """
    times: list[list[float]] = [[] for _ in opts]
    for i in range(cfg.warmup + cfg.steps):
        for opt, ts in zip(opts, times):
            dist.barrier()  # outside the timed region: no rank's figure includes waiting for a late one
            t0 = time.perf_counter()
            opt.step()
            if i >= cfg.warmup:
                ts.append((time.perf_counter() - t0) * 1e3)
    out = []
    for opt, ts in zip(opts, times):
        dist.barrier()
        with record() as log:
            opt.step()
        out.append({"ms": statistics.median(ts), "calls": dict(log.calls), "bytes": dict(log.bytes)})
    return out


def _worker(rank: int, world: int, cfg: Config, tmp: str) -> None:
    torch.set_num_threads(1)  # one thread per rank: W ranks share the host's cores
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world,
        timeout=timedelta(seconds=cfg.timeout_s),
    )
    try:
        mesh_cache: dict = {}
        cases = [(name, mode) for name in cfg.optimizers for mode in cfg.modes]
        opts = [_build(mode, name, cfg, mesh_cache) for name, mode in cases]
        mine = [dict(optimizer=n, mode=m, **r) for (n, m), r in zip(cases, _measure(opts, cfg))]
        everyone: list = [None] * world
        dist.all_gather_object(everyone, mine)
        if rank == 0:
            with open(os.path.join(tmp, "result.json"), "w") as f:
                json.dump(everyone, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------- driver
def run(world: int, cfg: Config) -> list[dict]:
    """Measure every (optimizer, mode) of ``cfg`` on ``world`` gloo ranks; one row each.

    Row keys: ``W, optimizer, mode, ms`` (max over ranks of the median), ``ms_ranks``, ``calls`` and
    ``bytes`` (``record()`` of one step, max over ranks per kind; ``bytes_min`` the min), ``model``
    (:func:`model_bytes`), ``sent`` (:func:`sent_bytes` of the recorded payloads), ``gflops``
    (:func:`model_flops` / 1e9) and ``wire`` (bytes per element of the orthogonalized matrices).
    """
    wire_dtype = as_dtype(cfg.ns_dtype, torch.device("cpu"))
    wire = min(wire_dtype.itemsize, 4)  # polynomial NS: results travel in ns_dtype when narrower than fp32
    stacks = stacks_of(cfg.d, cfg.layers)
    with tempfile.TemporaryDirectory(prefix="muonlab-perf-dist-") as tmp:
        mp.spawn(_worker, args=(world, cfg, tmp), nprocs=world, join=True)
        with open(os.path.join(tmp, "result.json")) as f:
            ranks = json.load(f)
    rows = []
    for i, first in enumerate(ranks[0]):
        per = [r[i] for r in ranks]
        kinds = sorted({k for r in per for k in r["bytes"]})
        payload = {k: max(r["bytes"].get(k, 0) for r in per) for k in kinds}
        rows.append(dict(
            W=world, optimizer=first["optimizer"], mode=first["mode"], wire=wire,
            ms=max(r["ms"] for r in per), ms_ranks=[r["ms"] for r in per],
            calls={k: max(r["calls"].get(k, 0) for r in per) for k in kinds}, bytes=payload,
            bytes_min={k: min(r["bytes"].get(k, 0) for r in per) for k in kinds},
            model=model_bytes(first["mode"], first["optimizer"], stacks, world, wire),
            sent={k: sent_bytes(k, v, world) for k, v in payload.items()},
            gflops=model_flops(first["mode"], stacks, world) / 1e9,
        ))
    return rows


def _mb(n: float) -> str:
    return f"{n / 1e6:.3f} MB" if n >= 1e5 else f"{n / 1e3:.2f} kB" if n >= 100 else f"{int(n)} B"


def _kinds(d: dict, fmt=_mb) -> str:
    return ", ".join(f"{k} {fmt(v)}" for k, v in sorted(d.items())) or "-"


def table(rows: list[dict]) -> str:
    """The rows as a markdown table; step-time ratios against ``local`` at the same ``W``."""
    local = {(r["W"], r["optimizer"]): r["ms"] for r in rows if r["mode"] == "local"}
    lines = [
        "| W | optimizer | mode | ms / step | vs local | NS GFLOP / rank | calls / step | record() bytes / rank "
        "| sent / rank (from record) | model: sent / rank | sent = model |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = local.get((r["W"], r["optimizer"]))
        ratio = f"{r['ms'] / base:.2f}x" if base else "-"
        same = "-" if not r["model"] and not r["sent"] else "yes" if r["sent"] == r["model"] else "**no**"
        lines.append(
            f"| {r['W']} | {r['optimizer']} | {r['mode']} | {r['ms']:.1f} | {ratio} | {r['gflops']:.2f} "
            f"| {_kinds(r['calls'], str)} | {_kinds(r['bytes'])} | {_kinds(r['sent'])} | {_kinds(r['model'])} | {same} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", default="1,2", help="comma-separated world sizes (default: 1,2)")
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per mode (median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--optimizers", default="muon,namo", help="registry names, comma separated")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--ns-dtype", default="auto")
    args = ap.parse_args(argv)
    cfg = Config(
        d=args.d, layers=args.layers, steps=args.steps, warmup=args.warmup, ns_dtype=args.ns_dtype,
        optimizers=tuple(s.strip() for s in args.optimizers.split(",") if s.strip()),
        modes=tuple(s.strip() for s in args.modes.split(",") if s.strip()),
    )
    worlds = [int(w) for w in args.nproc.split(",")]
    cores = os.cpu_count() or 1
    stacks = stacks_of(cfg.d, cfg.layers)
    resolved = as_dtype(cfg.ns_dtype, torch.device("cpu"))
    print(f"# d={cfg.d}, layers={cfg.layers}: {sum(k for k, _, _ in stacks)} matrices in {len(stacks)} stacks, "
          f"P={sum(k * m * n for k, m, n in stacks) / 1e6:.2f}M; ns_dtype={cfg.ns_dtype!r} -> {resolved} "
          f"(results travel in {'it' if resolved.itemsize < 4 else 'fp32'}); gloo, 1 thread per rank; "
          f"{cores} CPU cores ({torch.backends.cpu.get_cpu_capability()}); torch {torch.__version__}")
    for w in worlds:
        if w > cores:
            print(f"# note: W={w} > {cores} cores: ranks share cores (oversubscribed); its timings measure "
                  "time slicing, not parallel speedup")
    rows = [row for w in worlds for row in run(w, cfg)]
    print(table(rows))


if __name__ == "__main__":
    main()
