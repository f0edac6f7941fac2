"""Plots and terminal output of the bench and curvature reports: every optimizer distinguishable, 80 columns, ETA.

The results are built from hand-written JSONL records in which every optimizer has *the same*
validation curve, the worst case of curves hiding each other (Muon under NorMuon in the demo).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from matplotlib.colors import to_rgba
from rich.console import Console

from muonlab.bench import load_config
from muonlab.bench import plot as bench_plot
from muonlab.bench import report, runner
from muonlab.bench.curvature import plots as curvature_plots
from muonlab.bench.sweep import ExperimentResult, RunRecord, _Progress

DEMO = [o.name for o in load_config("demo").optimizers]  # the eight optimizers of `make demo`


def fake_result(tmp_path: Path, names: list[str], loss: float = 5.4321, steps: int = 30) -> ExperimentResult:
    """An experiment with one finished run per optimizer, identical curves, on a 2-point lr grid."""
    raw = {"name": "fake", "steps": steps, "eval_every": 10, "seeds": [0], "target": 5.6, "task": {"name": "gpt"},
           "optimizers": {n: {"lr_grid": [0.01, 0.03]} for n in names}}
    cfg = load_config(raw)
    runs = []
    for n in names:
        for lr in (0.01, 0.03):
            spec = runner.RunSpec("fake", "gpt", {}, n, lr, 0, {}, steps=steps, eval_every=10, target=5.6)
            path = tmp_path / f"{spec.run_id}.jsonl"
            rows = [{"type": "config"}] + [{"type": "step", "step": s, "val_loss": 6.0 - s / 100} for s in range(0, 31, 10)]
            summary = {"type": "summary", "status": "ok", "final_val_loss": loss, "steps_done": steps,
                       "steps_to_target": 125, "time_to_target": 12.5, "train_time": 1234.5}
            path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, summary]))
            runs.append(RunRecord(spec, path, "sweep", summary))
    return ExperimentResult(cfg, tmp_path, runs, {n: 0.01 for n in names}, 5.6, steps)


def dash_pattern(line) -> tuple:
    """The dash pattern matplotlib draws a line with (``get_linestyle`` says "--" for every custom pattern)."""
    offset, dashes = line._unscaled_dash_pattern  # private, but the one place the drawn pattern lives
    return (line.get_linestyle(), offset, tuple(dashes or ()))


def test_optimizer_styles_unique_for_the_first_forty():
    """Any two of the first 40 optimizers differ in colour or dash pattern; the first eight in both."""
    styles = [bench_plot.optimizer_style(i) for i in range(40)]
    assert len({(s["color"], str(s["linestyle"])) for s in styles}) == 40
    first = styles[:8]
    assert len({s["color"] for s in first}) == 8 and len({str(s["linestyle"]) for s in first}) == 8
    assert len({s["marker"] for s in first}) == 8


@pytest.mark.parametrize("figure", ["val_loss", "lr_sensitivity"])
def test_bench_lines_differ_per_optimizer(tmp_path, figure):
    """In the loss and lr plots each of the demo's optimizers has its own colour, line style and marker."""
    import matplotlib.pyplot as plt

    result = fake_result(tmp_path, DEMO)
    fig = bench_plot.val_loss_figure(result) if figure == "val_loss" else bench_plot.lr_sensitivity_figure(result)
    try:
        for ax in fig.axes[:1]:
            lines = {}
            for line in ax.get_lines():
                name = str(line.get_label()).split(" ")[0]
                if name in DEMO:
                    lines[name] = line
            assert set(lines) == set(DEMO)
            assert len({to_rgba(l.get_color()) for l in lines.values()}) == len(DEMO)
            assert len({dash_pattern(l) for l in lines.values()}) == len(DEMO)
            assert len({l.get_marker() for l in lines.values()}) == len(DEMO)
            # the overlapping curves really overlap: the styles are what tells them apart
            assert len({tuple(l.get_ydata()) for l in lines.values()}) == 1
    finally:
        plt.close(fig)


def test_curvature_lines_differ_per_optimizer(tmp_path, monkeypatch):
    """In the curvature figures different optimizers differ in colour and marker; one optimizer keeps one colour."""
    captured = []
    monkeypatch.setattr(curvature_plots, "_save", lambda fig, path: captured.append(fig) or path)
    names = ["adamw", "muon", "normuon"]
    rows = [{"step": s, "val_loss": 6 - s / 100, "curv/nds": 0.5, "curv/nds_hidden": 0.4, "curv/within": 0.3,
             "curv/cross": 0.2, "curv/within_share": 0.6, "curv/realized": -0.01, "curv/predicted": -0.012,
             "curv/first_order": 0.02, "curv/curvature_penalty": 0.01} for s in range(0, 101, 10)]
    main = {n: [rows] for n in names}
    curvature_plots.nds_vs_step(main, tmp_path / "a.png")
    curvature_plots.taylor_vs_val_loss(main, tmp_path / "b.png")
    curvature_plots.within_cross(main, tmp_path / "c.png")
    import matplotlib.pyplot as plt

    try:
        for fig in captured:
            for ax in fig.axes:
                by_opt: dict[str, set] = {}
                for line in ax.get_lines():
                    name = str(line.get_label()).split(" ")[0]
                    if name in names:
                        by_opt.setdefault(name, set()).add((to_rgba(line.get_color()), line.get_marker()))
                assert set(by_opt) == set(names)
                assert all(len(v) == 1 for v in by_opt.values())  # solid/dashed of one optimizer: same look
                assert len({next(iter(v)) for v in by_opt.values()}) == len(names)
        assert to_rgba(curvature_plots.looks(names)["muon"]["color"]) == to_rgba("tab:blue")
    finally:
        for fig in captured:
            plt.close(fig)


def test_final_table_fits_80_columns(tmp_path):
    """The final table rendered at width 80 has no line over 80 characters and no cell cut off."""
    result = fake_result(tmp_path, DEMO)
    buf = io.StringIO()
    report.print_table(result, console=Console(file=buf, width=80, color_system=None))
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    body = [line for line in text.splitlines() if line.split(" ")[0] in DEMO]
    assert [line.split(" ")[0] for line in body] == DEMO  # one row per optimizer, names whole
    assert all("5.4321±0.0000" in line and "125 (1/1)" in line and " 1234 " in line for line in body)


def test_wide_terminal_table_is_at_most_100_columns(tmp_path):
    """On a wide terminal the table stays compact (<= 100 columns) and on one line per row."""
    result = fake_result(tmp_path, DEMO)
    buf = io.StringIO()
    report.print_table(result, console=Console(file=buf, width=200, color_system=None))
    lines = buf.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 100
    assert sum(line.split(" ")[0] in DEMO for line in lines) == len(DEMO)


def test_progress_has_an_eta():
    """The bench progress display has a time-remaining column (rich's TimeRemainingColumn)."""
    from rich.progress import TimeRemainingColumn

    bar = _Progress(True, total=3)
    assert any(isinstance(c, TimeRemainingColumn) for c in bar.bar.columns)
    assert _Progress(False, total=3).bar is None
