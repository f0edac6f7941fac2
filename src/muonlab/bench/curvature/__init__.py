"""``python -m muonlab curvature``: the curvature paper's findings reproduced at small scale.

Also the bench callback :class:`CurvatureProbe` (registered in the bench as ``"curvature"``), which
any bench experiment can attach with a ``[callbacks.curvature]`` table.

.. code-block:: text

    python -m muonlab curvature                  # full default (about 6 min on 2 CPU cores)
    python -m muonlab curvature --quick          # smoke run (1-2.5 min), written to <out>/curvature-quick
    python -m muonlab curvature my.toml --set steps=800 --set optimizers.muon.lr=0.03 --out runs

The configuration is checked in full before any work (:mod:`.checks`): a bad key, optimizer,
hyperparameter or value is one line on stderr naming the key, exit status 2.

Writes ``<out>/curvature/report.md``, ``summary.json``, ``figures/*.png`` and one JSONL record per
training run under ``runs/`` (a finished run is reused when the command is repeated with the same
configuration, code version and environment: its cache key, :mod:`muonlab.bench.provenance`).

References:
    Wang et al., "Why Muon Outperforms Adam: A Curvature Perspective", arXiv 2606.04662 (2026).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from muonlab.bench.curvature.probe import CurvatureCallback, CurvatureProbe

__all__ = ["CurvatureCallback", "CurvatureProbe", "add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``curvature`` subcommand."""
    parser.add_argument("config", nargs="?", default=None,
                        help="optional TOML file overriding the defaults (see muonlab.bench.curvature.config)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, fewer steps, smaller sweeps (< 3 min)")
    parser.add_argument("--out", default="runs", metavar="DIR", help="output root (default: runs/); the report "
                        "goes to DIR/<name>/report.md")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value with a dotted key and a TOML literal, e.g. --set steps=300 "
                             "--set optimizers.muon.lr=0.03 --set sweep.enabled=false; repeatable")
    parser.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    parser.add_argument("--fresh", action="store_true",
                        help="retrain every run, even where a finished record with the same cache key exists")


def run(args: argparse.Namespace) -> int:
    """Run the experiment described by ``args``; returns the exit status."""
    from muonlab.bench.curvature.config import load_config
    from muonlab.bench.curvature.experiment import run_experiment

    try:
        cfg = load_config(args.config, list(args.overrides), quick_run=args.quick)
    except ValueError as exc:  # ConfigError: the message names the key; one line, exit status 2
        print(f"muonlab curvature: config error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    out = Path(args.out) / cfg.name
    command = "python -m muonlab curvature " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    summary = run_experiment(cfg, out, progress=not args.no_progress, command=command.strip(), fresh=args.fresh)
    print(f"\nReport: {out / 'report.md'}")
    print("Figures: " + ", ".join(str(out / p) for p in summary["figures"].values()))
    return 0
