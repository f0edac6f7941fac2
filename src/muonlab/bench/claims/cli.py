"""``python -m muonlab bench claims [NAME ...] [--quick] [--out DIR] [--list] [--no-progress]``.

Runs the named claims (default: all) and prints the claims table and the path of ``report.md``.
An unknown claim name is a usage error (exit status 2) reported before any training.

References:
    Python ``argparse``, https://docs.python.org/3/library/argparse.html.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Sequence

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    from muonlab.bench.claims import CLAIMS, GROUPS

    p = argparse.ArgumentParser(
        prog="muonlab bench claims",
        description="Re-measure the papers' claims (lr sweeps, held-out seeds, paired 95%% intervals, verdicts); "
                    "writes <out>/claims/report.md. Claims: " + ", ".join(CLAIMS) + "; groups: "
                    + ", ".join(f"{k} = {' + '.join(v)}" for k, v in GROUPS.items()) + ".")
    p.add_argument("names", nargs="*", metavar="NAME", help="claims to run (default: all)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: tiny models, 40 steps, 2-point grids, 3 seeds (minutes; verdicts are not evidence)")
    p.add_argument("--out", default="runs", metavar="DIR", help="output root (default: runs/)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.add_argument("--list", action="store_true", help="list the claims and their comparisons, run nothing")
    p.add_argument("--mode", choices=["full", "quick", "tiny"], default=None, help=argparse.SUPPRESS)  # tests
    return p


def _list() -> None:
    from muonlab.bench.claims import CLAIMS

    for claim in CLAIMS.values():
        print(f"{claim.name}: {claim.paper}: {claim.statement}")
        if claim.todo:
            print(f"    skipped: {claim.todo}")
        for c in claim.comparisons:
            print(f"    {c.experiment}: {c.describe()}")


def main(argv: Sequence[str]) -> int:
    """Entry point of ``muonlab bench claims`` (``argv``: the arguments after ``claims``)."""
    from muonlab.bench.claims import resolve_names, run_claims
    from muonlab.bench.config import ConfigError

    args = build_parser().parse_args(list(argv))
    if args.list:
        _list()
        return 0
    try:
        names = resolve_names(args.names)
    except ValueError as exc:
        print(f"muonlab bench claims: {exc}", file=sys.stderr)
        return EXIT_USAGE
    mode = args.mode or ("quick" if args.quick else "full")
    command = "python -m muonlab bench claims " + " ".join(shlex.quote(a) for a in argv)
    try:
        result = run_claims(names, args.out, mode=mode, progress=not args.no_progress, command=command.strip(),
                            log=lambda s: print(s, flush=True))
    except ConfigError as exc:
        print(f"muonlab bench claims: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for row in result.rows:
        figure = "" if row.interval is None else f"  {row.interval}"
        where = f" ({row.comparison.experiment})" if row.comparison else ""
        print(f"[{row.verdict}] {row.claim.name}: {row.label}{where}{figure}"
              + (f"  ({'; '.join(row.notes)})" if row.notes else ""))
    print(f"report: {result.report_path}")
    return 0
