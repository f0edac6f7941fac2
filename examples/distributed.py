"""Train a small MLP with a muonlab optimizer under DDP, FSDP2, HSDP or ZeRO, with a DCP checkpoint.

    python examples/distributed.py --mode fsdp --nproc 2          # spawns 2 CPU ranks (gloo)
    torchrun --nproc-per-node 4 examples/distributed.py --mode hsdp   # or launched by torchrun

Each rank trains on its own data shard; the optimizer is the same object in every mode:

* ddp:  ``DistributedDataParallel(model)`` + ``process_group=`` -> each rank orthogonalizes its share.
* fsdp: ``fully_shard(model)``; the optimizer reads the mesh from the DTensor parameters.
* hsdp: ``fully_shard(model, mesh=2-D (replicate, shard))``; same, over the shard dimension.
* zero: ``ZeroRedundancyOptimizer(groups, optimizer_class=muonlab.NAMO)`` over DDP.

``--ckpt DIR`` saves the model and optimizer with torch.distributed.checkpoint at the end and
resumes from it when it exists (any world size).
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile

import torch
import torch.distributed as dist
import torch.nn as nn

import muonlab


def build(mode: str, world: int) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)  # the same initial weights on every rank
    model = nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 4))
    # Hyperparameters live in the groups (ZeroRedundancyOptimizer copies its keyword arguments into
    # every group, so the AdamW groups must bring their own); the last Linear is the head: AdamW.
    hp = dict(lr=0.02, weight_decay=0.01, adamw_lr=3e-3, adamw_weight_decay=0.0, head=["4"])
    if mode in ("ddp", "zero"):
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(model)
        groups = muonlab.param_groups(model, **hp)
        if mode == "zero":
            from torch.distributed.optim import ZeroRedundancyOptimizer

            return model, wrapped, ZeroRedundancyOptimizer(groups, optimizer_class=muonlab.NAMO)
        return model, wrapped, muonlab.NAMO(groups, process_group=wrapped.process_group)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if mode == "hsdp":
        mesh = init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("replicate", "shard"))
    else:
        mesh = init_device_mesh("cpu", (world,))
    fully_shard(model, mesh=mesh)  # replaces the parameters by DTensors: route after it
    return model, model, muonlab.NAMO(muonlab.param_groups(model, **hp))


def checkpoint(model: nn.Module, opt: torch.optim.Optimizer, path: str, load: bool) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, opt)
    if load:
        dcp.load({"model": msd, "optim": osd}, checkpoint_id=path)
        set_state_dict(model, opt, model_state_dict=msd, optim_state_dict=osd)
    else:
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=path)


def train(rank: int, world: int, args: argparse.Namespace) -> float:
    model, wrapped, opt = build(args.mode, world)
    resume = args.ckpt and os.path.exists(os.path.join(args.ckpt, ".metadata")) and args.mode != "zero"
    if resume:
        checkpoint(model, opt, args.ckpt, load=True)
    target = nn.Linear(16, 4)  # the teacher, the same on every rank
    torch.manual_seed(1000 + rank)  # each rank its own data shard
    loss = torch.zeros(())
    for _ in range(args.steps):
        x = torch.randn(32, 16)
        with torch.no_grad():
            y = target(x).argmax(-1)
        loss = nn.functional.cross_entropy(wrapped(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if args.ckpt and args.mode != "zero":  # ZeRO's state lives on its owners: use opt.consolidate_state_dict()
        checkpoint(model, opt, args.ckpt, load=False)
    dist.all_reduce(loss.detach_(), op=dist.ReduceOp.AVG)
    if rank == 0:
        print(f"{args.mode} on {world} ranks: loss {loss.item():.4f} after {args.steps} steps"
              + (" (resumed)" if resume else ""))
    return loss.item()


def _rank(rank: int, world: int, args: argparse.Namespace, path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        train(rank, world, args)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("ddp", "fsdp", "hsdp", "zero"), default="fsdp")
    parser.add_argument("--nproc", type=int, default=2, help="ranks to spawn (ignored under torchrun)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--ckpt", default=None, help="DCP checkpoint directory (resume if present)")
    args = parser.parse_args(argv)
    if "RANK" in os.environ:  # launched by torchrun
        dist.init_process_group("gloo")
        train(dist.get_rank(), dist.get_world_size(), args)
        dist.destroy_process_group()
        return
    path = os.path.join(tempfile.mkdtemp(), "rdzv")
    torch.multiprocessing.spawn(_rank, args=(args.nproc, args, path), nprocs=args.nproc)


if __name__ == "__main__":
    main()
