"""One benchmark run: (task, optimizer, hyperparameters, lr, seed) -> a JSONL record.

A run trains for a fixed budget and never stops early on validation loss (the budget is the same for
every optimizer; "steps to target" is read off the record afterwards). Its JSONL file holds:

1. a ``config`` row: the resolved run configuration, git commit (and dirty flag), versions (python,
   torch, muonlab), machine, date and the run's ``cache_key`` (:mod:`muonlab.bench.provenance`);
2. one ``step`` row per optimizer step: ``step`` (1-based), ``train_loss`` (before the step), ``lr``
   (the scheduled base lr used by that step), ``time`` (cumulative training seconds, excluding
   evaluation and callbacks), validation metrics on evaluation steps, callback outputs; a ``step 0``
   row holds the evaluation of the initial model;
3. a ``summary`` row: ``status`` (``"ok"`` or ``"diverged"``), final validation metrics, steps and
   time to target, training and wall time.

A file without a summary row is a crashed or interrupted run and is rerun from scratch; a finished
file is reused only when its cache key equals this process's key for the same run (same resolved
config, code version, torch version, device and Newton–Schulz dtype; :func:`reusable_run`). Runs are
deterministic for a seed: two runs give the same rows except the timing fields (:data:`TIMING_KEYS`).

Data-parallel runs (``--nproc``, :mod:`muonlab.bench.parallel`) train through DDP on each rank's
slice of every batch; the header adds ``world_size`` and ``mode``, the losses are means over ranks,
and only rank 0 writes the file.

References:
    AlgoPerf (arXiv 2306.07179): fixed workloads, time-to-target, no early stopping on the eval set.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch

from muonlab.bench import provenance
from muonlab.bench.parallel import LOCAL, Parallel
from muonlab.bench.schedule import lr_factor, make_scheduler
from muonlab.bench.validate import build_optimizer

TIMING_KEYS = frozenset({"time", "train_time", "wall_time", "time_to_target", "date"})


@dataclass
class RunSpec:
    """Everything that defines one run (its hash is part of the run id)."""

    experiment: str
    task: str
    task_config: dict[str, Any]
    optimizer: str
    lr: float
    seed: int
    hparams: dict[str, Any]
    steps: int
    eval_every: int
    target: float | None
    grad_clip: float | None = None
    schedule: dict[str, Any] = field(default_factory=lambda: {"kind": "constant", "warmup": 0,
                                                              "min_lr_ratio": 0.0})
    callbacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    grad_accum: int = 1
    device: str = "cpu"
    world_size: int = 1  # data-parallel ranks (--nproc): part of the hash, so reuse never mixes world sizes

    @property
    def run_id(self) -> str:
        """``<optimizer>-lr<lr>-s<seed>-<hash of the spec>``: a changed config never reuses old files."""
        fields = asdict(self)
        if self.world_size == 1:  # hash single-process specs as before the field existed: old files stay reusable
            del fields["world_size"]
        blob = json.dumps(fields, sort_keys=True, default=str).encode()
        return f"{self.optimizer}-lr{self.lr:.4g}-s{self.seed}-{hashlib.sha1(blob).hexdigest()[:8]}"


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """Git commit (``None`` outside a checkout) and versions, recorded in every run's config row."""
    code = provenance.code_version()
    return {"git_commit": code["git_commit"], "git_dirty": code["git_dirty"],
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "muonlab": code["muonlab"]},
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "torch_threads": torch.get_num_threads()}}


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_run(path: Path) -> tuple[dict, list[dict], dict | None]:
    """``(config row, step rows, summary row or None)`` of a run file; tolerates a torn last line."""
    header, rows, summary = {}, [], None
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # interrupted mid-write: treat as partial
            kind = row.get("type")
            if kind == "config":
                header = row
            elif kind == "summary":
                summary = row
            else:
                rows.append(row)
    return header, rows, summary


def spec_from_header(header: dict[str, Any]) -> RunSpec | None:
    """The :class:`RunSpec` recorded in a ``config`` row (``None`` when the row lacks a field)."""
    names = [f.name for f in fields(RunSpec)]
    try:
        return RunSpec(**{k: header[k] for k in names if k in header})
    except TypeError:
        return None


def key_for(spec: RunSpec) -> dict[str, Any]:
    """The cache key of ``spec`` in this process (see :mod:`muonlab.bench.provenance`)."""
    return provenance.cache_key(spec, resolve_device(spec.device))


def reusable_run(path: Path, spec: RunSpec | None = None) -> tuple[dict, dict] | None:
    """``(config row, summary row)`` of a finished run file that this process may reuse, else ``None``.

    Reusable means: the file has a summary row, and the cache key stored in its config row equals
    the key this process computes for the run (``spec``, or the spec recorded in the file). A file
    written by other code (another commit, an uncommitted edit, another muonlab or torch version),
    on another device or with another resolved Newton–Schulz dtype is not reused; neither is a file
    from before cache keys were recorded.
    """
    if not path.is_file():
        return None
    header, _, summary = load_run(path)
    if summary is None or "cache_key" not in header:
        return None
    spec = spec if spec is not None else spec_from_header(header)
    if spec is None or header["cache_key"] != key_for(spec):
        return None
    return header, summary


def finished_summary(path: Path, spec: RunSpec | None = None) -> dict | None:
    """The summary row of a finished, reusable run file (see :func:`reusable_run`), or ``None``."""
    found = reusable_run(path, spec)
    return None if found is None else found[1]


def _finite(x: float) -> bool:
    return math.isfinite(x)


def run(spec: RunSpec, task: Any, optimizer_cls: type, path: Path, *, callbacks: list[Any] = (),
        on_step: Callable[[int, int], None] | None = None, parallel: Parallel = LOCAL) -> dict[str, Any]:
    """Train one run and write its JSONL record to ``path`` (overwriting a partial file).

    Args:
        spec: the run definition.
        task: an object implementing :class:`muonlab.bench.tasks.base.Task`.
        optimizer_cls: the optimizer class (built by :func:`muonlab.bench.validate.build_optimizer`).
        path: the JSONL file to write.
        callbacks: fresh :class:`muonlab.bench.callbacks.Callback` instances for this run.
        on_step: progress hook called as ``on_step(step, total)``.
        parallel: this rank's place in a data-parallel run (default: one process, no DDP).

    Returns:
        The summary row.
    """
    wall0 = time.perf_counter()
    torch.manual_seed(spec.seed)  # anything the task does not seed itself (dropout) is still reproducible
    device = parallel.device(resolve_device(spec.device))
    model = task.make_model(spec.seed).to(device)  # tasks move batches to the model's device
    # CUDA work is asynchronous: wait for it before reading the clock, or step times mean nothing.
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # Routing, evaluation and callbacks see the plain module; only the training loss runs through DDP.
    optimizer = build_optimizer(spec.optimizer, optimizer_cls, model, spec.lr, spec.hparams,
                                process_group=parallel.group)
    train_model = parallel.wrap(model)
    sched_kw = dict(kind=spec.schedule["kind"], warmup=spec.schedule["warmup"],
                    min_lr_ratio=spec.schedule["min_lr_ratio"])
    scheduler = make_scheduler(optimizer, spec.steps, **sched_kw)
    batches = map(parallel.shard, task.train_batches(spec.seed))  # same global batch, one slice per rank
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"type": "config", "run_id": spec.run_id, **asdict(spec), "mode": parallel.mode, **environment(),
              "cache_key": key_for(spec),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}

    # Schedule-free optimizers (SFNorMuon) keep the gradient point y in the parameters: their eval()
    # swaps in the average x, the model to evaluate, and train() puts y back before the next step.
    modes = callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None))

    def evaluate() -> dict[str, float]:
        if modes:
            optimizer.eval()
        model.eval()
        with torch.no_grad():
            metrics = task.evaluate(model)
        model.train()
        if modes:
            optimizer.train()
        # Replicas are identical, so this mean changes nothing but makes every rank agree bitwise
        # on divergence and target (they must leave the loop at the same step).
        means = parallel.mean(torch.tensor([float(v) for v in metrics.values()], dtype=torch.float64))
        return {k: float(v) for k, v in zip(metrics, means.tolist())}

    status, train_time, diverged_at = "ok", 0.0, None
    last_eval: dict[str, float] = {}
    steps_to_target = time_to_target = None
    done = 0
    with open(path if parallel.is_main else os.devnull, "w", encoding="utf-8") as fh:  # rank 0 writes
        def write(row: dict[str, Any]) -> None:
            fh.write(json.dumps(row) + "\n")
            fh.flush()

        write(header)
        last_eval = evaluate()
        write({"type": "step", "step": 0, **last_eval, "time": 0.0})
        model.train()
        for step in range(1, spec.steps + 1):
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            total_loss = 0.0
            for _ in range(spec.grad_accum):  # mean loss over micro-batches = one big batch
                batch = next(batches)
                loss = task.loss(train_model, batch) / spec.grad_accum
                loss.backward()
                total_loss = total_loss + loss.detach()  # stays on device: one host sync per step
            total_loss = parallel.mean(total_loss)  # one all_reduce, outside optimizer.step()
            row: dict[str, Any] = {"type": "step", "step": step, "train_loss": float(total_loss),
                                   "lr": spec.lr * lr_factor(step - 1, spec.steps, **sched_kw)}
            if spec.grad_clip:
                row["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip))
            train_time += time.perf_counter() - t0
            if not _finite(row["train_loss"]):
                status, diverged_at = "diverged", step
                write({**row, "time": train_time})
                break
            active = [cb for cb in callbacks if step % cb.every == 0]
            for cb in active:  # after backward and clipping, before the step
                row.update(cb(step, model, optimizer, task, batch))
            t0 = time.perf_counter()
            if getattr(optimizer, "needs_loss", False):  # NGNM: its step size reads this batch's loss
                optimizer.step(loss=total_loss)
            else:
                optimizer.step()
            scheduler.step()
            sync()
            train_time += time.perf_counter() - t0
            for cb in active:
                if hasattr(cb, "after_step"):
                    row.update(cb.after_step(step, model, optimizer))
            done = step
            if step % spec.eval_every == 0 or step == spec.steps:
                last_eval = evaluate()
                row.update(last_eval)
                val = last_eval.get("val_loss", math.nan)
                if not _finite(val):
                    status, diverged_at = "diverged", step
                elif steps_to_target is None and spec.target is not None and val <= spec.target:
                    steps_to_target, time_to_target = step, train_time
            row["time"] = train_time
            write(row)
            if on_step is not None:
                on_step(step, spec.steps)
            if status == "diverged":
                break
        final_loss = last_eval.get("val_loss") if status == "ok" else None
        summary = {"type": "summary", "run_id": spec.run_id, "status": status, "steps_done": done,
                   "diverged_at": diverged_at, "final_val_loss": final_loss,
                   "final_metrics": last_eval if status == "ok" else {},
                   "target": spec.target, "steps_to_target": steps_to_target, "time_to_target": time_to_target,
                   "train_time": train_time, "wall_time": time.perf_counter() - wall0}
        write(summary)
    return summary
