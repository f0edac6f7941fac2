"""The experiment driver: lr sweep per optimizer, best lr by final validation loss, reruns with seeds.

Protocol ("Benchmarks done honestly" in DESIGN.md):

1. **Sweep.** Every optimizer, AdamW included, runs its whole ``lr_grid`` with the first
   ``sweep_seeds`` seeds, on the same task, budget and schedule.
2. **Select.** The best lr minimizes the final validation loss averaged over the sweep seeds; a
   diverged run counts as ``+inf`` (it is reported, never hidden). Ties go to the smaller lr.
3. **Confirm.** The best lr is rerun with the remaining seeds; the report gives mean ± std over all
   seeds at the best lr.

Finished runs are reused on a rerun when their record's cache key (resolved config, muonlab
version, git commit and dirty flag, source hash, torch version, device, resolved Newton–Schulz dtype;
:mod:`.provenance`) equals the current one, so an interrupted experiment resumes where it stopped
and a code or environment change reruns everything; ``fresh=True`` (``--fresh``) reruns regardless.
Every run happens in this one process, so wall times are comparable.
With ``parallel`` (``--nproc``, :mod:`.parallel`) every rank walks the same sweep in lockstep; rank 0
decides reuse and broadcasts each summary, so every rank selects the same best lr.

References:
    AlgoPerf (arXiv 2306.07179); Schmidt, Schneider & Hennig, "Descending through a Crowded Valley",
    arXiv 2007.01547 (tune every optimizer, report seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from muonlab.bench import provenance, runner
from muonlab.bench.callbacks import make_callbacks
from muonlab.bench.config import ExperimentConfig
from muonlab.bench.parallel import LOCAL, Parallel
from muonlab.bench.validate import resolve_refs, validate


@dataclass
class RunRecord:
    """A run of the experiment and where its record lives."""

    spec: runner.RunSpec
    path: Path
    phase: str                     # "sweep" or "seeds"
    summary: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False          # True when a finished file was reused
    origin: str | None = None      # reused runs: when and with which code the record was made


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` produced."""

    config: ExperimentConfig
    out_dir: Path
    runs: list[RunRecord]
    best_lr: dict[str, float]
    target: float | None
    steps: int
    command: str | None = None     # the command line, recorded in the report
    world_size: int = 1            # data-parallel processes of every run (--nproc)
    mode: str = "local"            # "local" or "replicated (DDP)"
    report_path: Path | None = None
    plots: list[Path] = field(default_factory=list)


def final_loss(summary: Mapping[str, Any]) -> float:
    """The selection score of a run: final validation loss, ``+inf`` when diverged or missing."""
    loss = summary.get("final_val_loss")
    if summary.get("status") != "ok" or loss is None or not math.isfinite(loss):
        return math.inf
    return float(loss)


def select_best_lr(records: list[RunRecord]) -> float:
    """The lr with the lowest mean final validation loss over its sweep runs (ties: smaller lr)."""
    scores: dict[float, list[float]] = {}
    for rec in records:
        scores.setdefault(rec.spec.lr, []).append(final_loss(rec.summary))
    return min(sorted(scores), key=lambda lr: sum(scores[lr]) / len(scores[lr]))


class _Progress:
    """Rich progress display (overall runs + current run steps), or nothing when disabled."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar = None
        if enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            # ETA per bar: the overall one extrapolates from the finished runs (reused runs finish
            # instantly, so it settles after the first trained run).
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), transient=False)
            self.overall = self.bar.add_task("runs", total=total)
            self.current = self.bar.add_task("run", total=1)

    def __enter__(self) -> "_Progress":
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start_run(self, label: str, steps: int) -> None:
        if self.bar is not None:
            self.bar.reset(self.current, total=steps, description=label)

    def step(self, step: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(self.current, completed=step)

    def end_run(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.overall)


def run_experiment(cfg: ExperimentConfig, out: str | Path = "runs", *, optimizers: Mapping[str, type] | None = None,
                   tasks: Mapping[str, Any] | None = None, progress: bool = True, report: bool = True,
                   console: Any = None, command: str | None = None, parallel: Parallel = LOCAL,
                   fresh: bool = False) -> ExperimentResult:
    """Validate, sweep, select, rerun with seeds, then write the report and plots.

    Args:
        cfg: the resolved experiment (see :func:`muonlab.bench.config.load_config`).
        out: root folder; results go to ``out/<cfg.name>/``.
        optimizers: optimizer registry (default ``muonlab.optimizers()``).
        tasks: task registry (default ``muonlab.bench.tasks.TASKS``).
        progress: show the rich progress display.
        report: write ``report.md`` and the plots at the end.
        console: a ``rich.console.Console`` for the final table (default: a new one).
        command: the command line that started the experiment, recorded in the report.
        parallel: this rank's place in a data-parallel run (default: one process); only rank 0
            writes files, shows progress and prints (see :func:`muonlab.bench.parallel.launch_experiment`).
        fresh: rerun every run, even those with a reusable record (``--fresh``).

    Raises:
        ConfigError: before any training, when the experiment is invalid.
    """
    task, classes = validate(cfg, optimizers=optimizers, tasks=tasks)
    steps = cfg.steps if cfg.steps is not None else int(task.steps)
    target = cfg.target if cfg.target is not None else getattr(task, "target", None)
    out_dir = Path(out) / cfg.name
    out_dir.mkdir(parents=True, exist_ok=True)

    def spec_for(opt, lr: float, seed: int) -> runner.RunSpec:
        return runner.RunSpec(
            experiment=cfg.name, task=cfg.task, task_config=cfg.task_config, optimizer=opt.name, lr=lr,
            seed=seed, hparams=resolve_refs(opt.hparams, best_lr), steps=steps, eval_every=cfg.eval_every,
            target=target,
            grad_clip=cfg.grad_clip, schedule={"kind": cfg.schedule.kind, "warmup": cfg.schedule.warmup,
                                               "min_lr_ratio": cfg.schedule.min_lr_ratio},
            callbacks=cfg.callbacks, grad_accum=cfg.grad_accum, device=cfg.device, world_size=parallel.world_size)

    sweep_seeds, confirm_seeds = cfg.seeds[:cfg.sweep_seeds], cfg.seeds[cfg.sweep_seeds:]
    total = sum(len(o.lr_grid) * len(sweep_seeds) + len(confirm_seeds) for o in cfg.optimizers)
    records: list[RunRecord] = []
    best_lr: dict[str, float] = {}

    def execute(rec: RunRecord, bar: _Progress) -> None:
        found = runner.reusable_run(rec.path, rec.spec) if parallel.is_main and not fresh else None
        done = parallel.from_main(None if found is None else (found[1], provenance.describe(found[0])))
        if done is not None:
            rec.summary, rec.origin = done
            rec.skipped = True
        else:
            bar.start_run(f"{rec.spec.optimizer} lr={rec.spec.lr:.3g} seed={rec.spec.seed}", steps)
            rec.summary = parallel.from_main(runner.run(rec.spec, task, classes[rec.spec.optimizer], rec.path,
                                                        callbacks=make_callbacks(cfg.callbacks), on_step=bar.step,
                                                        parallel=parallel))
        bar.end_run()
        records.append(rec)

    with _Progress(progress and parallel.is_main, total) as bar:
        for opt in cfg.optimizers:
            sweep = []
            for lr in opt.lr_grid:
                for seed in sweep_seeds:
                    spec = spec_for(opt, lr, seed)
                    rec = RunRecord(spec, out_dir / f"{spec.run_id}.jsonl", "sweep")
                    execute(rec, bar)
                    sweep.append(rec)
            best_lr[opt.name] = select_best_lr(sweep)
            for seed in confirm_seeds:
                spec = spec_for(opt, best_lr[opt.name], seed)
                execute(RunRecord(spec, out_dir / f"{spec.run_id}.jsonl", "seeds"), bar)

    result = ExperimentResult(cfg, out_dir, records, best_lr, target, steps, command, parallel.world_size,
                              parallel.mode)
    if report and parallel.is_main:
        from muonlab.bench.report import print_table, write_report

        write_report(result)
        print_table(result, console=console)
    return result
