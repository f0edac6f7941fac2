"""Data-parallel benchmark runs: ``muonlab bench --nproc N`` (or launched by ``torchrun``).

Every rank builds the same task, model and sweep, and takes its own contiguous slice of every batch,
so the global batch is the config's batch: ``batch_size`` rows split ``N`` ways (it must divide).
The model is wrapped in ``DistributedDataParallel`` (gradients averaged over ranks before the step)
and the optimizer gets ``process_group=``, so each rank orthogonalizes only its share of the hidden
matrices (the ``replicated`` mode of :mod:`muonlab.distributed`). The logged train loss and the
validation metrics are means over ranks; only rank 0 writes run records, the report and the plots.

With ``N = 1`` and no ``torchrun`` environment nothing here is used: :class:`Parallel` ``LOCAL`` is
the identity and the runs are exactly the single-process runs.

References:
    PyTorch, "Getting Started with Distributed Data Parallel",
    https://pytorch.org/tutorials/intermediate/ddp_tutorial.html; ``torchrun`` environment variables,
    https://pytorch.org/docs/stable/elastic/run.html.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist

from muonlab.bench.config import ConfigError, ExperimentConfig

# Every collective (and the rendezvous) fails after this long instead of hanging forever: a rank that
# died or took another branch of the sweep would otherwise leave the others waiting.
TIMEOUT = datetime.timedelta(minutes=10)
TORCHRUN_VARS = ("RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class Parallel:
    """This process's place in a data-parallel run (``LOCAL``: one process, no process group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and prints."""
        return self.rank == 0

    @property
    def mode(self) -> str:
        """How the optimizer runs, as the report and the JSONL header state it."""
        return "local" if self.world_size == 1 else "replicated (DDP)"

    @property
    def group(self) -> Any:
        """The ``process_group=`` of the optimizers (``None`` when local)."""
        return None if self.world_size == 1 else dist.group.WORLD

    def device(self, device: torch.device) -> torch.device:
        """One GPU per rank (``cuda:<local rank>``); CPU ranks share the CPU."""
        if self.world_size == 1 or device.type != "cuda":
            return device
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module the training loss runs through: DDP averages the gradients in ``backward()``."""
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        p = next(model.parameters(), None)
        ids = [p.device.index] if p is not None and p.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, batch: Any) -> Any:
        """This rank's contiguous slice (dim 0) of every tensor of a batch; ``None`` batches pass through."""
        if self.world_size == 1 or batch is None:
            return batch
        if isinstance(batch, torch.Tensor):
            n = batch.size(0)
            if n % self.world_size:
                raise ValueError(f"a batch of {n} rows does not split into {self.world_size} equal shards")
            per = n // self.world_size
            return batch[self.rank * per:(self.rank + 1) * per]
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.shard(t) for t in batch)
        raise TypeError(f"cannot shard a batch of type {type(batch).__name__} across ranks")

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean over ranks (SUM then divide: gloo has no AVG); the identity when local."""
        if self.world_size == 1:
            return values
        out = values.detach().clone()
        if dist.get_backend() == "nccl" and out.device.type != "cuda":
            out = out.cuda()  # nccl reduces device tensors only (the validation metrics are host floats)
        dist.all_reduce(out)
        return out / self.world_size

    def from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank, so that every rank takes the same branch of the sweep."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


LOCAL = Parallel()


def torchrun_env() -> bool:
    """True when this process was started by ``torchrun`` (or another env:// launcher)."""
    return all(v in os.environ for v in TORCHRUN_VARS)


def parse_nproc(value: str | None) -> int | None:
    """``--nproc`` as an integer >= 1 (``None`` when not given); :class:`ConfigError` otherwise."""
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1 or str(n) != value.strip():
        raise ConfigError(f"--nproc must be an integer >= 1, got {value!r}")
    return n


def _backend(device: str) -> str:
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "nccl" if cuda else "gloo"


def _init_group(backend: str, local_rank: int, **kwargs: Any) -> None:
    """Join the process group; with nccl, pin this rank's GPU first (object broadcasts use it)."""
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend, timeout=TIMEOUT, **kwargs)


def check_shardable(task: Any, seed: int, world_size: int) -> None:
    """Fail before training (in the launching process) when the task's batches do not split evenly."""
    probe = Parallel(0, world_size)
    try:
        probe.shard(next(iter(task.train_batches(seed))))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--nproc {world_size}: {exc}; choose a task batch_size divisible by it") from None


def _worker(rank: int, world_size: int, init_file: str, cfg: ExperimentConfig, out: str, kwargs: dict,
            threads: int) -> None:
    """One spawned rank: join the group, run the experiment, leave together."""
    torch.set_num_threads(threads)
    _init_group(_backend(cfg.device), rank, init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    _run_in_group(Parallel(rank, world_size, rank), cfg, out, kwargs)


def _run_in_group(par: Parallel, cfg: ExperimentConfig, out: str | Path, kwargs: dict) -> Any:
    from muonlab.bench.sweep import run_experiment

    try:
        result = run_experiment(cfg, out, parallel=par, **kwargs)
        dist.barrier()  # rank 0 is still writing the report: nobody tears the group down under it
    finally:
        dist.destroy_process_group()
    return result


def launch_experiment(cfg: ExperimentConfig, out: str | Path = "runs", *, nproc: int | None = None,
                      optimizers: Mapping[str, type] | None = None, tasks: Mapping[str, Any] | None = None,
                      **kwargs: Any) -> Any:
    """Run :func:`muonlab.bench.run_experiment` on ``nproc`` data-parallel processes.

    * Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set): join that group (env://), spawn nothing;
      ``nproc``, when given, must equal ``WORLD_SIZE``.
    * ``nproc`` 1 (the default): the plain single-process run, returned as is.
    * ``nproc`` > 1: spawn ``nproc`` ranks (file:// rendezvous in a temporary folder; gloo on CPU,
      nccl when the config's device is CUDA) and wait for them; returns ``None`` (the results are
      in ``out/<name>/``, written by rank 0).

    Raises:
        ConfigError: before any process starts, for an invalid experiment or a batch that does not
            split into ``nproc`` shards.
    """
    from muonlab.bench.sweep import run_experiment
    from muonlab.bench.validate import validate

    kwargs.update(optimizers=optimizers, tasks=tasks)
    if torchrun_env():
        world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        if nproc is not None and nproc != world:
            raise ConfigError(f"--nproc {nproc} disagrees with torchrun's WORLD_SIZE={world}")
        par = Parallel(rank, world, int(os.environ.get("LOCAL_RANK", rank)))
        if world > 1:
            check_shardable(validate(cfg, optimizers=optimizers, tasks=tasks)[0], cfg.seeds[0], world)
        _init_group(_backend(cfg.device), par.local_rank)  # env:// (MASTER_ADDR, MASTER_PORT from torchrun)
        return _run_in_group(par, cfg, out, kwargs)
    if not nproc or nproc == 1:
        return run_experiment(cfg, out, **kwargs)
    if _backend(cfg.device) == "nccl" and nproc > torch.cuda.device_count():
        raise ConfigError(f"--nproc {nproc}: only {torch.cuda.device_count()} CUDA devices")
    check_shardable(validate(cfg, optimizers=optimizers, tasks=tasks)[0], cfg.seeds[0], nproc)
    threads = max(1, torch.get_num_threads() // nproc)  # ranks share the cores; oversubscribing is slower
    with tempfile.TemporaryDirectory(prefix="muonlab-bench-") as tmp:
        torch.multiprocessing.spawn(_worker, args=(nproc, os.path.join(tmp, "rendezvous"), cfg, str(out), kwargs,
                                                   threads), nprocs=nproc, join=True)
    return None
