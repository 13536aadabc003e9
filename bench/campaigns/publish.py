"""``python -m bench.publish``: run (or resume) every study of the results page, then rewrite the page.

Each study of ``bench.report.publish.STUDIES`` runs as one sweep into ``RESULTS/publish/<study>/`` (its
``hydra.sweep.dir``): a sweep re-run into the same folder skips the runs that finished, so an interrupted
publication resumes where it stopped, over as many sittings as it takes. The runs are ``nice``d, ``--jobs``
at a time (Hydra's joblib launcher, one thread each). Then the page is written from the run files
(``python -m bench.report --publish OUT RESULTS``).

    python -m bench.publish                                   # every study, then docs/results/
    python -m bench.publish --only vq_estimators --dry-run    # print the commands
    python -m bench.publish --results results_large --set vq_estimators:seed=0,1,2,3,4 --jobs 8
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.formats.progress import duration, time_left
from bench.report.publish import PageStudy, by_name, write_page
from bench.report.publish.page import study_folder


class UsageError(ValueError):
    """Bad command-line input; the message is the paragraph printed before exiting with 2."""


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog="python -m bench.publish", description=__doc__.split("\n\n")[0])
    result.add_argument(
        "--results", type=Path, default=Path("results"), help="where the runs go (default: results)"
    )
    result.add_argument(
        "--out", type=Path, default=Path("docs/results"), help="the page's folder (default: docs/results)"
    )
    result.add_argument("--jobs", type=int, default=2, help="runs at a time (default: 2)")
    result.add_argument(
        "--only", action="append", default=[], metavar="STUDY", help="run only this study (repeatable)"
    )
    result.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="STUDY:KEY=VALUE",
        help="replace (or add) one override of a study, e.g. vq_estimators:seed=0,1,2,3,4 (repeatable)",
    )
    result.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    result.add_argument("--no-run", action="store_true", help="write the page from the runs there are")
    result.add_argument("--nice", type=int, default=10, help="niceness of the runs (default: 10)")
    return result


def chosen_studies(only: list[str], settings: list[str]) -> tuple[PageStudy, ...]:
    """The studies to run, with the ``--set`` overrides applied; UsageError naming a bad item."""
    known = by_name()
    unknown = [name for name in only if name not in known]
    if unknown:
        raise UsageError(
            f"--only {', '.join(unknown)}: no such study. The studies are: {', '.join(known)} "
            "(bench/report/publish/studies.py)."
        )
    studies = dict(known)
    for item in settings:
        name, colon, override = item.partition(":")
        if not colon or "=" not in override or not override.partition("=")[0]:
            raise UsageError(
                f"--set {item!r}: expected STUDY:KEY=VALUE, e.g. --set vq_estimators:seed=0,1,2,3,4."
            )
        if name not in studies:
            raise UsageError(f"--set {item!r}: no study {name!r}. The studies are: {', '.join(known)}.")
        studies[name] = studies[name].with_override(override)
    return tuple(studies[name] for name in known if not only or name in only)


def command(study: PageStudy, results: Path, jobs: int, niceness: int) -> list[str]:
    """The study's sweep: ``python -m bench -m`` (or ``python -m bench.tune``) into its folder; a
    recommendation's ``python -m bench.recommend`` with that folder as ``recommend.dir``; a script's
    ``python scripts/<name>.py`` (run by hand, its output committed: nothing to run here, an empty list)."""
    prefix = ["nice", "-n", str(niceness)] if niceness and shutil.which("nice") else []
    if study.command.endswith(".py"):
        return []
    if study.command == "bench.recommend":
        return [
            *prefix,
            sys.executable,
            "-m",
            study.command,
            *study.overrides,
            f"recommend.dir={study_folder(results, study)}",
        ]
    multirun = ["-m"] if study.command == "bench" else []
    return [
        *prefix,
        sys.executable,
        "-m",
        study.command,
        *multirun,
        *study.overrides,
        f"hydra.sweep.dir={study_folder(results, study)}",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={jobs}",
        "threads=1",
        "progress=false",
    ]


def run_studies(
    studies: tuple[PageStudy, ...], results: Path, jobs: int, niceness: int, dry_run: bool
) -> int:
    """Run every study's sweep in turn; returns how many failed."""
    failed = 0
    started = time.monotonic()
    for number, study in enumerate(studies, 1):
        arguments = command(study, results, jobs, niceness)
        if not arguments:
            print(
                f"[{number}/{len(studies)}] {study.name}: its script runs by hand ({study.command}); the "
                "page shows what it committed",
                flush=True,
            )
            continue
        print(f"[{number}/{len(studies)}] {study.name}: {shlex.join(arguments)}", flush=True)
        if dry_run:
            continue
        start = time.monotonic()
        code = subprocess.call(arguments)
        elapsed = time.monotonic() - started
        left = time_left(elapsed, number, len(studies))
        print(
            f"[{number}/{len(studies)}] {study.name}: exit {code} after {duration(time.monotonic() - start)} "
            f"({duration(elapsed)} so far; about {duration(left or 0)} left for the other studies)",
            flush=True,
        )
        failed += code != 0
    return failed


def main(argv: list[str] | None = None) -> int:
    """0: page written; 1: a study failed (the page is written from what finished); 2: bad input."""
    arguments = parser().parse_args(argv)
    try:
        if arguments.jobs < 1:
            raise UsageError(f"--jobs must be at least 1, got {arguments.jobs}.")
        studies = chosen_studies(arguments.only, arguments.set)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failed = 0
    if not arguments.no_run:
        failed = run_studies(studies, arguments.results, arguments.jobs, arguments.nice, arguments.dry_run)
    if arguments.dry_run:
        return 0
    print(f"writing the results page into {arguments.out} from {arguments.results}", flush=True)
    try:
        page = write_page(arguments.results, arguments.out)
    except FileNotFoundError as error:
        print(f"error: {error}.", file=sys.stderr)
        return 2
    print(f"results page written to {page}" + (f"; {failed} study sweep(s) failed" if failed else ""))
    return 1 if failed else 0
