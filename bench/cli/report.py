"""``python -m bench.report DIR``: tables and figures from every run below DIR (reads files only).

Writes into ``DIR/report/`` (or ``--out``): ``summary.csv`` (one row per run), ``curves.csv`` (every metric
of every run, long form), ``comparisons.csv`` (every pairwise comparison of every ranking), PNG and PDF
figures with the numbers each draws (``<figure>.csv``), and ``report.md``. ``--from-tables REPORT_DIR``
rebuilds report.md and the figures from a report folder's summary.csv and curves.csv, without the run
folders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.formats.errors import ConfigError
from bench.report.markdown import ReportOptions
from bench.report.survival import DEFAULT_FRACTION
from bench.report.write import write_from_tables, write_report


def parse_targets(
    items: list[str], option: str = "--target", example: str = "embedding=0.7"
) -> dict[str, float]:
    """``TASK=VALUE`` items as a mapping; ValueError naming the item that is not of that form."""
    targets = {}
    for item in items:
        task, _, value = item.partition("=")
        try:
            targets[task] = float(value)
        except ValueError:
            raise ValueError(f"{option} {item!r}: expected TASK=NUMBER, e.g. {option} {example}") from None
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
        "--publish",
        type=Path,
        default=None,
        metavar="PAGE_DIR",
        help="write the results page into PAGE_DIR (e.g. docs/results) from the studies' runs below ROOT "
        "(ROOT/publish/<study>/, as python -m bench.publish runs them; bench.report.publish)",
    )
    result.add_argument(
        "--from-summaries",
        action="store_true",
        help="ROOT is a results page folder (e.g. docs/results): redraw the page from its committed tables",
    )
    result.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="TASK=VALUE",
        help="level of TASK's time-to-target table, on validation_objective where the runs record it, else "
        "objective (repeatable; default: --target-fraction of the way from the initial value to the best "
        "known one)",
    )
    result.add_argument(
        "--target-fraction",
        type=float,
        default=DEFAULT_FRACTION,
        metavar="F",
        help="default target: this fraction of the gap between the initial value (step 0) and the task's "
        f"best known value (default {DEFAULT_FRACTION})",
    )
    result.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="TASK=MS",
        help="compute budget T (ms per gradient) of TASK's MSE-at-a-budget ranking (repeatable; default: the "
        "largest estimate_time_ms among its sampling configurations)",
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (0 written, 2 bad input or nothing to report on)."""
    arguments = parser().parse_args(argv)
    try:
        targets = parse_targets(arguments.target)
        budgets = parse_targets(arguments.budget, "--budget", "vae=5")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not 0 < arguments.target_fraction <= 1:
        print(f"error: --target-fraction must be in (0, 1], got {arguments.target_fraction}", file=sys.stderr)
        return 2
    if any(not value > 0 for value in budgets.values()):
        print("error: --budget must be a positive number of milliseconds", file=sys.stderr)
        return 2
    options = ReportOptions(targets, arguments.target_fraction, budgets)
    if not arguments.root.is_dir():
        print(
            f"error: {arguments.root} is not a folder; give the folder that holds your runs.", file=sys.stderr
        )
        return 2
    if arguments.publish is not None or arguments.from_summaries:
        return publish_page(arguments.root, arguments.publish, arguments.from_summaries)
    try:
        if arguments.from_tables:
            directory = write_from_tables(arguments.root, arguments.out, options)
        else:
            directory = write_report(arguments.root, arguments.out, options)
    except FileNotFoundError as error:
        hint = (
            "Give a report folder written by python -m bench.report."
            if arguments.from_tables
            else ("Run `python -m bench ...` first.")
        )
        print(f"error: {error}. {hint}", file=sys.stderr)
        return 2
    except ConfigError as error:  # an output name that would lie outside the report folder
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report written to {directory / 'report.md'} (summary.csv, curves.csv and figures beside it)")
    return 0


def publish_page(root: Path, page: Path | None, from_summaries: bool) -> int:
    """``--publish PAGE_DIR ROOT`` or ``--from-summaries PAGE_DIR``: the results page; exit 2 when there is
    nothing to write it from."""
    from bench.report.publish import render_page, write_page

    try:
        written = render_page(root) if from_summaries else write_page(root, page)
    except FileNotFoundError as error:
        hint = (
            "Give the results page's folder (docs/results), which holds a folder of tables per study."
            if from_summaries
            else "Run the studies first: python -m bench.publish."
        )
        print(f"error: {error}. {hint}", file=sys.stderr)
        return 2
    except ConfigError as error:  # a symbolic-linked study folder, a name that would lie outside the page
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"results page written to {written}")
    return 0
