"""Rendering of probe results: a rich table (plain text without rich), the failure reasons, JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from . import ProbeResult

PASS, FAIL = "✓", "✗"

#: one line per probe for the legend under the table
LEGEND = {
    "groups": "every param group moves after a step",
    "scheduler": "LambdaLR reaches every group (x0.5 halves the first move exactly)",
    "momentum": "step 2 remembers the sign of step 1's gradient (not at momentum 0)",
    "decay": "decay shrinks by exactly 1 - lr*wd (adaptive: linear in wd, once)",
    "adam": "the AdamW part moves ~lr at gradient scales 1e-3..1e30 (not SGD)",
    "routing": "Conv1D stepped as W^T (= its nn.Linear twin), tied head in AdamW",
    "resume": "3 steps + checkpoint + load + 2 steps == 5 steps, bitwise",
}


def _grid(results: Sequence[ProbeResult]) -> tuple[list[str], list[str], dict[tuple[str, str], ProbeResult]]:
    optimizers = list(dict.fromkeys(r.optimizer for r in results))
    probes = list(dict.fromkeys(r.probe for r in results))
    return optimizers, probes, {(r.optimizer, r.probe): r for r in results}


def failures(results: Sequence[ProbeResult]) -> list[str]:
    """``"optimizer / probe: reason"`` for every failed result."""
    return [f"{r.optimizer} / {r.probe}: {r.reason}" for r in results if not r.passed]


def summary(results: Sequence[ProbeResult]) -> str:
    """``"N/M passed"``, or the count that failed."""
    bad = sum(not r.passed for r in results)
    return f"{len(results) - bad}/{len(results)} passed" + (f", {bad} FAILED" if bad else "")


def plain_table(results: Sequence[ProbeResult]) -> str:
    """The optimizers x probes grid as plain text (✓ / ✗), then the legend, failures and the summary."""
    optimizers, probes, cell = _grid(results)
    rows = [["optimizer", *probes]] + [[o, *(PASS if cell[o, p].passed else FAIL for p in probes)] for o in optimizers]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [""] + [f"{p:<10} {LEGEND.get(p, '')}" for p in probes]
    bad = failures(results)
    if bad:
        lines += ["", "failures:"] + [f"  {line}" for line in bad]
    lines += ["", summary(results)]
    return "\n".join(lines)


def print_results(results: Sequence[ProbeResult], console: Any = None) -> None:
    """Print the grid with rich (coloured ✓ / ✗), or as :func:`plain_table` when rich is missing."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(plain_table(results))
        return
    console = console or Console()
    optimizers, probes, cell = _grid(results)
    table = Table(title="muonlab failure probes")
    table.add_column("optimizer")
    for p in probes:
        table.add_column(p, justify="center")
    for o in optimizers:
        table.add_row(o, *("[green]✓[/]" if cell[o, p].passed else "[bold red]✗[/]" for p in probes))
    console.print(table)
    for p in probes:
        console.print(f"  [bold]{p:<10}[/] {LEGEND.get(p, '')}", highlight=False)
    bad = failures(results)
    if bad:
        console.print("\n[bold red]failures:[/]")
        for line in bad:
            console.print(f"  {line}", markup=False, highlight=False)
    console.print("\n" + summary(results), highlight=False)


def to_json(results: Sequence[ProbeResult]) -> str:
    """``{"passed": bool, "probes": [...], "optimizers": [...], "results": [{optimizer, probe, passed, reason}]}``."""
    optimizers, probes, _ = _grid(results)
    return json.dumps({
        "passed": all(r.passed for r in results), "probes": probes, "optimizers": optimizers,
        "results": [r.as_dict() for r in results],
    }, indent=2)
