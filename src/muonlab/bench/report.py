"""The experiment report: ``report.md`` (tables + plots) and the rich table printed at the end.

Per optimizer, at its best lr and over all seeds: final validation loss mean ± std (sample std), steps
to the target (mean over the seeds that reached it, with the count) and its ratio to AdamW's (lower
is better: < 1 means fewer steps than AdamW), time to target and training time (seconds of
optimizer work, evaluation excluded, all measured in this one process). A second table gives the
whole lr sweep, diverged runs included, so the sensitivity is visible in numbers as well as in
``lr_sensitivity.png``.

References:
    DESIGN.md, "Benchmarks done honestly" (sweep everyone, several seeds, mean and spread,
    steps/time to target, timings as side-by-side ratios).
"""

from __future__ import annotations

import datetime
import math
import statistics
from dataclasses import dataclass
from typing import Any

from muonlab.bench import provenance
from muonlab.bench.runner import environment
from muonlab.bench.sweep import ExperimentResult, final_loss

BASELINE = "adamw"


@dataclass
class OptimizerSummary:
    """One row of the main table."""

    name: str
    best_lr: float
    n_runs: int
    n_diverged: int
    loss_mean: float
    loss_std: float
    steps_to_target: float | None   # mean over seeds that reached the target
    n_reached: int
    time_to_target: float | None
    train_time: float
    step_time: float                  # seconds per optimizer step (training only), mean over runs
    ratio_vs_baseline: float | None = None
    step_time_vs_baseline: float | None = None


def _mean_std(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return math.nan, math.nan
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def _step_time(runs: list) -> float:
    per_step = [r.summary["train_time"] / r.summary["steps_done"] for r in runs
                if r.summary.get("steps_done") and r.summary.get("train_time") is not None]
    return statistics.fmean(per_step) if per_step else math.nan


def summarize(result: ExperimentResult) -> list[OptimizerSummary]:
    """Main-table rows, in config order."""
    rows = []
    for opt in result.config.optimizers:
        best = result.best_lr[opt.name]
        runs = [r for r in result.runs if r.spec.optimizer == opt.name and r.spec.lr == best]
        losses = [final_loss(r.summary) for r in runs]
        finite = [x for x in losses if math.isfinite(x)]
        mean, std = _mean_std(finite)
        reached = [r.summary for r in runs if r.summary.get("steps_to_target") is not None]
        rows.append(OptimizerSummary(
            name=opt.name, best_lr=best, n_runs=len(runs), n_diverged=len(losses) - len(finite),
            loss_mean=mean, loss_std=std,
            steps_to_target=statistics.fmean(s["steps_to_target"] for s in reached) if reached else None,
            n_reached=len(reached),
            time_to_target=statistics.fmean(s["time_to_target"] for s in reached) if reached else None,
            train_time=statistics.fmean(r.summary.get("train_time", math.nan) for r in runs) if runs else math.nan,
            step_time=_step_time(runs)))
    base = next((r for r in rows if r.name == BASELINE), None)
    for r in rows:
        if base is not None and base.steps_to_target and r.steps_to_target is not None:
            r.ratio_vs_baseline = r.steps_to_target / base.steps_to_target
        if base is not None and base.step_time > 0 and math.isfinite(r.step_time):
            r.step_time_vs_baseline = r.step_time / base.step_time
    return rows


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def _secs(x: float | None) -> str:
    """Seconds: three significant digits below 100 s, whole seconds above (``1234``, not ``1.23e+03``)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.0f}" if abs(x) >= 100 else format(x, ".3g")


def table_cells(s: OptimizerSummary) -> list[str]:
    """The formatted cells of one main-table row (shared by markdown and rich)."""
    loss = "diverged" if s.n_diverged == s.n_runs else f"{_fmt(s.loss_mean)} ± {_fmt(s.loss_std)}"
    if 0 < s.n_diverged < s.n_runs:
        loss += f" ({s.n_diverged} diverged)"
    steps = f"{_fmt(s.steps_to_target, '.0f')} ({s.n_reached}/{s.n_runs})" if s.n_reached else f"— (0/{s.n_runs})"
    return [s.name, f"{s.best_lr:.3g}", loss, steps, _fmt(s.ratio_vs_baseline, ".2f"),
            _secs(s.time_to_target), _secs(s.train_time), _fmt(s.step_time_vs_baseline, ".2f")]


HEADERS = ["optimizer", "best lr", "final val loss (mean ± std)", "steps to target (reached)",
           "steps vs AdamW", "time to target (s)", "train time (s)", "step time vs AdamW"]


def sweep_table(result: ExperimentResult) -> list[str]:
    """Markdown lines: final validation loss at every swept lr (mean over sweep seeds)."""
    lines = ["| optimizer | lr | final val loss | runs |", "|---|---|---|---|"]
    for opt in result.config.optimizers:
        for lr in opt.lr_grid:
            runs = [r for r in result.runs if r.spec.optimizer == opt.name and r.spec.lr == lr and r.phase == "sweep"]
            losses = [final_loss(r.summary) for r in runs]
            cell = "diverged" if all(math.isinf(x) for x in losses) else _fmt(
                statistics.fmean(x for x in losses if math.isfinite(x)))
            mark = " **best**" if lr == result.best_lr[opt.name] else ""
            lines.append(f"| {opt.name} | {lr:.3g}{mark} | {cell} | {len(runs)} |")
    return lines


def _show(value: Any, best_lr: dict[str, float]) -> str:
    if isinstance(value, str) and value.startswith("best:") and value[5:] in best_lr:
        return f"{value} (= {best_lr[value[5:]]:.3g})"
    return repr(value) if isinstance(value, str) else str(value)


def write_report(result: ExperimentResult) -> None:
    """Write ``report.md`` and the PNG plots into ``result.out_dir``; fills ``report_path``/``plots``."""
    from muonlab.bench.plot import make_plots

    cfg, env, code = result.config, environment(), provenance.code_version()
    result.plots = make_plots(result)
    rows = summarize(result)
    lines = [f"# Benchmark report: `{cfg.name}`", ""]
    if result.command:
        lines += [f"Command: `{result.command}`  "]
    lines += [
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}  ",
        f"Machine: {env['machine']['platform']}, {env['machine']['processor']}, "
        f"{env['machine']['torch_threads']} torch threads  ",
        f"Versions: python {env['versions']['python']}, torch {env['versions']['torch']}, "
        f"muonlab {env['versions']['muonlab']}, git "
        f"{provenance.short_commit(env['git_commit'], env['git_dirty'])}, source hash {code['source_hash']}  ",
        f"Processes: world size {result.world_size}, mode {result.mode}"
        + (f" (each rank trains on 1/{result.world_size} of every batch; the logged losses are means over "
           "ranks; Newton–Schulz work is split across ranks)" if result.world_size > 1 else ""),
        "",
        f"Task `{cfg.task}` {cfg.task_config}; budget {result.steps} steps (same for every optimizer, "
        f"no early stopping); eval every {cfg.eval_every} steps; schedule {cfg.schedule.kind} "
        f"(warmup {cfg.schedule.warmup}, min lr ratio {cfg.schedule.min_lr_ratio}); grad clip "
        f"{cfg.grad_clip or 'off'}; target val loss {_fmt(result.target)}; seeds {cfg.seeds} "
        f"(lr sweep on the first {cfg.sweep_seeds}).",
        "",
        "## Results at each optimizer's best lr",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(table_cells(s)) + " |" for s in rows]
    lines += ["", "Best lr: lowest final validation loss averaged over the sweep seed(s). Steps to target: "
              "first evaluation step with val loss <= target, averaged over the seeds that reached it "
              "(a count below n/n means some seeds never reached it, so compare with care). "
              "Steps vs AdamW: that mean divided by AdamW's (< 1 is faster). Step time vs AdamW: seconds "
              "per optimizer step relative to AdamW's, measured in this process (> 1 is costlier). "
              "Train and time-to-target seconds exclude evaluation and callbacks.", "", "## Learning-rate sweep", ""]
    lines += sweep_table(result)
    edge = [f"{o.name} ({result.best_lr[o.name]:.3g})" for o in result.config.optimizers
            if len(o.lr_grid) > 2 and result.best_lr[o.name] in (min(o.lr_grid), max(o.lr_grid))]
    if edge:
        lines += ["", f"**Best lr on the edge of its grid** for {', '.join(edge)}: the optimum may lie outside "
                  "the grid; widen it before drawing conclusions about these optimizers."]
    lines += ["", "## Optimizer settings", ""]
    for opt in result.config.optimizers:
        fixed = ", ".join(f"{k}={_show(v, result.best_lr)}" for k, v in opt.hparams.items()) or "defaults"
        lines.append(f"- `{opt.name}`: lr grid {[float(f'{x:.3g}') for x in opt.lr_grid]}; {fixed}")
    diverged = [r for r in result.runs if r.summary.get("status") == "diverged"]
    if diverged:
        lines += ["", "## Diverged runs", ""]
        lines += [f"- `{r.spec.run_id}` (non-finite loss at step {r.summary.get('diverged_at')})" for r in diverged]
    lines += ["", "## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in result.plots]
    lines += ["", *provenance_lines(result), ""]
    result.report_path = result.out_dir / "report.md"
    result.report_path.write_text("\n".join(lines), encoding="utf-8")


def provenance_lines(result: ExperimentResult) -> list[str]:
    """Markdown lines: how many runs were trained now and where each reused run came from."""
    reused = [r for r in result.runs if r.skipped]
    lines = [f"Run records (JSONL): {len(result.runs)} files in this folder; {len(result.runs) - len(reused)} "
             f"trained by this invocation, {len(reused)} reused."]
    if reused:
        lines += ["", "**Reused runs** (same cache key: resolved config, muonlab version, git commit and dirty "
                  "flag, source hash, torch version, device and Newton–Schulz dtype; `--fresh` reruns them). "
                  "Their timings are those of the invocation that made them:", ""]
        lines += [f"- `{r.spec.run_id}`: {r.origin}" for r in reused]
    return lines


# Terminal headers: two short lines each, so that the eight columns fit 80 characters.
TERMINAL_HEADERS = ["optimizer", "best\nlr", "val loss\nmean ± std", "steps to\ntarget", "steps vs\nAdamW",
                    "time to\ntarget s", "train\ntime s", "step time\nvs AdamW"]
MAX_TABLE_WIDTH = 100  # wider terminals get a table of at most this width (the columns stay readable)


def results_table(result: ExperimentResult) -> Any:
    """The main table as a ``rich.table.Table`` that fits 80 columns.

    Two-line headers, no vertical rules and one space between columns: a typical table (losses
    ``"0.1234±0.0123"``, ``"125 (2/2)"`` steps) is about 80 characters wide. When a table is wider
    than the terminal, rich wraps cells at spaces and folds what remains (``overflow="fold"``): a
    cell is wrapped, never cut off with an ellipsis.
    """
    from rich import box
    from rich.table import Table

    table = Table(title=f"{result.config.name}: {result.steps} steps, target {_fmt(result.target)}",
                  box=box.SIMPLE_HEAD, padding=(0, 0, 0, 1), pad_edge=False, show_edge=False)
    for i, h in enumerate(TERMINAL_HEADERS):
        table.add_column(h, overflow="fold", justify="left" if i == 0 else "right")
    for s in summarize(result):
        cells = table_cells(s)
        cells[2] = cells[2].replace(" ± ", "±")  # two characters that the 80-column budget needs
        table.add_row(*cells)
    return table


def print_table(result: ExperimentResult, console: Any = None) -> None:
    """Print the main table with rich (at most 100 columns wide), then where the report and plots are."""
    from rich.console import Console

    console = console or Console()
    console.print(results_table(result), width=min(console.width, MAX_TABLE_WIDTH))
    reused = sum(r.skipped for r in result.runs)
    if reused:
        console.print(f"{reused} of {len(result.runs)} runs reused from earlier invocations with the same cache key "
                      "(listed in report.md; --fresh reruns them)")
    if result.report_path is not None:
        console.print(f"report: {result.report_path}")
        for p in result.plots:
            console.print(f"plot:   {p}")
