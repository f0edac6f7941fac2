"""Command line: ``python -m muonlab {bench, list, curvature, perf, probes} ...`` (also the ``muonlab`` script).

* ``--version``: the installed muonlab version.
* ``bench [CONFIG] [--set k=v ...] [--optimizers a,b] [--quick] [--fresh] [--out DIR] [--nproc N]``:
  run an experiment (a shipped config name such as ``demo`` or a path to a TOML file) and write its
  report; finished runs with the same cache key are reused unless ``--fresh``; ``--nproc N`` trains
  every run data-parallel on N ranks (DDP; also works under ``torchrun``).
* ``bench claims [NAME ...] [--quick] [--out DIR] [--list]``: re-measure the papers' claims with
  confidence intervals and verdicts (``muonlab.bench.claims``).
* ``list``: the registered optimizers and tasks and the shipped configs.
* ``curvature ...``: the curvature diagnostics (``muonlab.bench.curvature``), imported lazily.
* ``perf [--nproc W1,W2,... | --train] ...``: optimizer step time, one process (``muonlab.perf``), with
  ``--nproc`` on W gloo ranks per world size (``muonlab.perf_dist``), with ``--train`` inside a training
  loop of a small GPT (``muonlab.perf_train``); other options pass through.
* ``probes [--optimizers a,b] [--json]``: the failure probes (``muonlab.probes``), optimizers x
  probes, ✓ / ✗ with the reason of each failure; exit status 1 if any failed.

Every subcommand checks its whole configuration before any work. Bad input (an unknown optimizer,
key or hyperparameter, with the nearest valid name; a value the optimizer's constructor rejects, with
its own message; an unavailable device; an out-of-range value, naming its key; a malformed option) is
answered with **one line on stderr** and exit status 2, never a traceback. ``bench`` and
``curvature`` without the ``bench`` extra installed (numpy, matplotlib, rich) say so in one line,
exit status 1.

References:
    Python ``argparse`` subcommands, https://docs.python.org/3/library/argparse.html#sub-commands.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from pathlib import Path
from typing import Sequence

EXIT_CONFIG_ERROR = 2
EXIT_MISSING_EXTRA = 1
# Subcommands that need the `bench` extra (pip install "muonlab[bench]"); checked before anything runs,
# so that a missing plotting library is not discovered after the last training run.
EXTRAS = {"bench": ("numpy", "matplotlib", "rich"), "curvature": ("numpy", "matplotlib", "rich")}


def missing_extra(command: str) -> str | None:
    """The first package of the ``bench`` extra that ``command`` needs and cannot import, else ``None``."""
    import importlib.util

    for name in EXTRAS.get(command, ()):
        if importlib.util.find_spec(name) is None:
            return name
    return None


class UsageError(Exception):
    """A malformed command line (argparse's complaint), reported as one line by :func:`main`."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse without the usage dump: an error becomes :class:`UsageError` (one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(self.prog, message)


def one_line(exc: BaseException) -> str:
    """The exception's message on a single line (TOML and torch messages may span several)."""
    return " ".join(str(exc).split())


def _names(value: str | None) -> list[str] | None:
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


def _check_out(out: str) -> None:
    from muonlab.bench.overrides import ConfigError

    if Path(out).exists() and not Path(out).is_dir():
        raise ConfigError(f"--out: {out!r} exists and is not a directory")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="compare optimizers on a task (lr sweeps, seeds, report, plots)",
                       description="Run a benchmark experiment and write runs/<name>/report.md.")
    p.add_argument("config", nargs="?", default="demo",
                   help="shipped config name (see `muonlab list`) or path to a TOML file (default: demo)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value; dotted keys, TOML literal values "
                        "(e.g. --set steps=200 --set optimizers.muon.lr_grid=[0.01,0.02]); repeatable")
    p.add_argument("--optimizers", default=None, metavar="A,B,...",
                   help="run only these optimizers of the config (comma separated)")
    p.add_argument("--quick", action="store_true",
                   help="shrink to a smoke run (few steps, 2-point lr grids, <= 2 seeds, small model)")
    p.add_argument("--out", default="runs", metavar="DIR", help="output root (default: runs/)")
    p.add_argument("--fresh", action="store_true",
                   help="rerun every run, even those with a finished record of the same config, code and "
                        "environment (by default those are reused and the report says where they came from)")
    p.add_argument("--no-progress", action="store_true", help="disable the progress display")
    # A string, checked by parse_nproc: a bad value gets one config-error line (exit 2), not argparse's usage.
    p.add_argument("--nproc", default=None, metavar="N",
                   help="data-parallel processes per run (DDP, gloo on CPU / nccl on CUDA; default 1, "
                        "or torchrun's WORLD_SIZE)")


def _add_curvature(sub: argparse._SubParsersAction, load: bool) -> None:
    p = sub.add_parser("curvature", help="curvature diagnostics (NDS, Taylor split, quadratic problems)",
                       description="Curvature diagnostics; see docs/curvature.md.")
    if not load:  # other subcommands never pay for (or break on) the curvature import
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        return
    try:
        module = importlib.import_module("muonlab.bench.curvature")
    except ImportError as exc:
        if exc.name is not None and not "muonlab.bench.curvature".startswith(exc.name):
            raise  # the module exists but one of its own imports is broken: show that
        p.set_defaults(_curvature_missing=True)
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        return
    module.add_arguments(p)
    p.set_defaults(_curvature_run=module.run)


def _add_perf(sub: argparse._SubParsersAction) -> None:
    # add_help=False and parse_known_args in main: every other option (and --help) goes to the module
    p = sub.add_parser("perf", add_help=False, help="optimizer step time (--nproc W,...: distributed, gloo)",
                       description="Step-time benchmarks; options of python -m muonlab.perf / muonlab.perf_dist.")
    p.add_argument("--nproc", default=None, metavar="W1,W2,...",
                   help="world sizes: run muonlab.perf_dist (local / replicated / sharded modes on gloo ranks)")
    p.add_argument("--train", action="store_true",
                   help="time step() inside a training loop of a small GPT (muonlab.perf_train)")


def _check_world_sizes(value: str) -> None:
    from muonlab.bench.overrides import ConfigError

    sizes = value.split(",")
    if not all(s.strip().isdigit() and int(s) >= 1 for s in sizes):
        raise ConfigError(f"--nproc must be comma-separated integers >= 1 (world sizes), got {value!r}")


def cmd_perf(args: argparse.Namespace, rest: Sequence[str]) -> int:
    if args.nproc is not None:
        _check_world_sizes(args.nproc)
    if args.train:
        if args.nproc is not None:
            from muonlab.bench.overrides import ConfigError

            raise ConfigError("perf: --train and --nproc do not go together (the training loop runs in one process)")
        from muonlab import perf_train

        perf_train.main(list(rest), parser_class=_Parser, prog="muonlab perf --train")
    elif args.nproc is None:
        from muonlab import perf

        perf.main(list(rest), parser_class=_Parser, prog="muonlab perf")
    else:
        from muonlab import perf_dist

        perf_dist.main(["--nproc", args.nproc, *rest])
    return 0


def _add_probes(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probes", help="pass/fail problems that catch silent optimizer failures",
                       description="Run the failure probes (docs/reliability.md) on the registered optimizers; "
                                   "exit status 1 if any probe fails.")
    p.add_argument("--optimizers", default=None, metavar="A,B,...",
                   help="probe only these registered optimizers (comma separated; default: all)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


def cmd_probes(args: argparse.Namespace) -> int:
    from muonlab.probes import run_probes
    from muonlab.probes.report import print_results, to_json

    import muonlab
    from muonlab.bench.overrides import ConfigError, unknown_name

    names = _names(args.optimizers)
    if args.optimizers is not None and not names:
        raise ConfigError("--optimizers: empty list (give registered names, comma separated)")
    for name in names or ():
        if name not in muonlab.optimizers():
            raise ConfigError("--optimizers: " + unknown_name("optimizer", name, muonlab.optimizers()))
    results = run_probes(names)
    if args.json:
        print(to_json(results))
    else:
        print_results(results)
    return 0 if all(r.passed for r in results) else 1


def build_parser(load_curvature: bool = True) -> argparse.ArgumentParser:
    """The ``muonlab`` argument parser (``load_curvature``: import the curvature subcommand's options)."""
    from muonlab import __version__

    parser = _Parser(prog="muonlab", description="Muon-family optimizers: benchmarks and curvature diagnostics.")
    parser.add_argument("--version", action="version", version=f"muonlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{bench,list,curvature,perf,probes}")
    _add_bench(sub)
    sub.add_parser("list", help="registered optimizers and tasks, shipped configs")
    _add_curvature(sub, load_curvature)
    _add_perf(sub)
    _add_probes(sub)
    return parser


def cmd_bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from muonlab.bench import load_config
    from muonlab.bench.parallel import launch_experiment, parse_nproc

    nproc = parse_nproc(args.nproc)
    _check_out(args.out)
    cfg = load_config(args.config, args.overrides, optimizers=_names(args.optimizers), quick=args.quick)
    launch_experiment(cfg, args.out, nproc=nproc, progress=not args.no_progress, fresh=args.fresh,
                      command="python -m muonlab " + " ".join(shlex.quote(a) for a in argv))
    return 0  # the table and the paths of report.md and the plots were printed by run_experiment


def _safe(fn, what: str) -> list[str]:
    try:
        return sorted(fn())
    except (ImportError, AttributeError) as exc:
        return [f"(no {what} available yet: {exc})"]


def cmd_list() -> int:
    from muonlab.bench.config import config_dir, shipped_configs
    from muonlab.bench.validate import default_optimizers, default_tasks

    print("optimizers: " + ", ".join(_safe(default_optimizers, "optimizer registry")))
    print("tasks:      " + ", ".join(_safe(default_tasks, "task registry")))
    print("configs:    " + ", ".join(shipped_configs()) + f"   ({config_dir()})")
    return 0


def _dispatch(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    if argv[:2] == ["bench", "claims"]:  # its own parser: claim names, not a config (muonlab.bench.claims.cli)
        from muonlab.bench.claims.cli import main as claims_main

        return claims_main(argv[2:])
    if argv[:1] == ["perf"]:
        return cmd_perf(*parser.parse_known_args(argv))
    args = parser.parse_args(argv)
    if args.command == "bench":
        return cmd_bench(args, argv)
    if args.command == "list":
        return cmd_list()
    if args.command == "probes":
        return cmd_probes(args)
    if getattr(args, "_curvature_missing", False):
        print("muonlab curvature: the curvature diagnostics (muonlab.bench.curvature) are not installed "
              "in this version yet.", file=sys.stderr)
        return 1
    _check_out(args.out)
    return int(args._curvature_run(args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m muonlab`` and the ``muonlab`` console script; returns the exit status."""
    from muonlab.bench.overrides import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), "")
    missing = missing_extra(command) if argv[:1] == [command] else None
    if missing is not None:
        print(f"muonlab {command}: needs the optional package {missing!r}: pip install \"muonlab[bench]\"",
              file=sys.stderr)
        return EXIT_MISSING_EXTRA
    parser = build_parser(load_curvature=bool(argv) and argv[0] == "curvature")
    try:
        return _dispatch(parser, argv)
    except UsageError as exc:
        print(f"{exc.prog}: error: {one_line(exc)} (see {exc.prog} --help)", file=sys.stderr)
    except ConfigError as exc:
        print(f"muonlab {command}: config error: {one_line(exc)}".replace("  ", " "), file=sys.stderr)
    except SystemExit as exc:  # --help and --version exit through argparse; hand their status back
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else EXIT_CONFIG_ERROR
    return EXIT_CONFIG_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
