"""``python -m bench.report DIR``: tables and figures from every run below DIR (reads files only).

Writes into ``DIR/report/`` (or ``--out``): ``summary.csv`` (one row per run), ``curves.csv`` (every metric
of every run, long form), PNG and PDF figures, and ``report.md``. ``--from-tables REPORT_DIR`` rebuilds
report.md and the figures from a report folder's summary.csv and curves.csv, without the run folders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.report.write import write_from_tables, write_report


def parse_targets(items: list[str]) -> dict[str, float]:
    """``TASK=VALUE`` items as a mapping; ValueError naming the item that is not of that form."""
    targets = {}
    for item in items:
        task, _, value = item.partition("=")
        try:
            targets[task] = float(value)
        except ValueError:
            raise ValueError(
                f"--target {item!r}: expected TASK=NUMBER, e.g. --target embedding=0.7"
            ) from None
    return targets


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n\n")[0])
    result.add_argument(
        "root", type=Path, nargs="?", default=Path("results"), help="folder holding runs (default: results)"
    )
    result.add_argument("--out", type=Path, default=None, help="report folder (default: ROOT/report)")
    result.add_argument(
        "--from-tables",
        action="store_true",
        help="ROOT is a report folder: rebuild report.md and the figures from its summary.csv and curves.csv "
        "(into --out, default ROOT itself)",
    )
    result.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="TASK=VALUE",
        help="objective level of TASK's time-to-target table (repeatable; default: the best level that every "
        "configuration's mean curve reaches)",
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (0 written, 2 bad input or nothing to report on)."""
    arguments = parser().parse_args(argv)
    try:
        targets = parse_targets(arguments.target)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not arguments.root.is_dir():
        print(
            f"error: {arguments.root} is not a folder; give the folder that holds your runs.", file=sys.stderr
        )
        return 2
    try:
        if arguments.from_tables:
            directory = write_from_tables(arguments.root, arguments.out, targets)
        else:
            directory = write_report(arguments.root, arguments.out, targets)
    except FileNotFoundError as error:
        hint = (
            "Give a report folder written by python -m bench.report."
            if arguments.from_tables
            else ("Run `python -m bench ...` first.")
        )
        print(f"error: {error}. {hint}", file=sys.stderr)
        return 2
    print(f"report written to {directory / 'report.md'} (summary.csv, curves.csv and figures beside it)")
    return 0
