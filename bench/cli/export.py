"""``python -m bench.export DIR --to tensorboard|mlflow``: send runs already on disk to a tracking tool.

Every run folder below DIR (one with a ``summary.json``) goes to TensorBoard (event files into
``<run>/tensorboard``, or ``--out OUT/<the run's path below DIR>``) or MLflow (``--tracking-uri``, default
``$MLFLOW_TRACKING_URI`` else ``./mlruns``; ``--experiment``, default ``gradbench``; one MLflow run per run
folder), exactly as ``logger=tensorboard|mlflow`` would have sent them during the run
(``bench.run.tracking``): ``metrics.csv``'s rows as scalars, the summary as final metrics and parameters. The
run folders are only read: they stay the source of truth.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.formats.contract import SUMMARY_FILE
from bench.formats.errors import ConfigError
from bench.run.tracking import MLflowTracker, TensorBoardTracker, export_run


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog="python -m bench.export", description=__doc__.split("\n\n")[0])
    result.add_argument("root", type=Path, help="folder holding runs (every folder with a summary.json)")
    result.add_argument("--to", required=True, choices=("tensorboard", "mlflow"), help="the tracking tool")
    result.add_argument(
        "--out",
        type=Path,
        default=None,
        help="tensorboard: the event files' root (default: each run's folder)",
    )
    result.add_argument("--tracking-uri", default=None, help="mlflow: the tracking URI (default: ./mlruns)")
    result.add_argument(
        "--experiment", default="gradbench", help="mlflow: the experiment (default gradbench)"
    )
    return result


def runs_below(root: Path) -> list[Path]:
    """Run folders below ``root`` (``root`` itself too), in path order; report folders are not runs."""
    return sorted(
        path.parent for path in root.rglob(SUMMARY_FILE) if "report" not in path.relative_to(root).parts
    )


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    root: Path = arguments.root
    if not root.is_dir():
        print(f"error: {root} is not a folder; give the folder that holds your runs.", file=sys.stderr)
        return 2
    runs = runs_below(root)
    if not runs:
        print(
            f"error: no run below {root} (no summary.json); run `python -m bench ...` first.", file=sys.stderr
        )
        return 2
    started, failed = time.perf_counter(), []
    for number, run in enumerate(runs, 1):
        relative = run.relative_to(root)
        try:
            if arguments.to == "tensorboard":
                base = run if arguments.out is None else arguments.out / relative
                tracker = TensorBoardTracker(base / "tensorboard" if arguments.out is None else base)
            else:
                tracker = MLflowTracker(
                    str(relative) if str(relative) != "." else run.name,
                    arguments.tracking_uri,
                    arguments.experiment,
                )
            export_run(run, tracker)
        except ConfigError as error:  # the extra is not installed: the same for every run
            print(f"error: {error}", file=sys.stderr)
            return 2
        except Exception as error:  # noqa: BLE001 - one run that cannot be sent; the others go on
            failed.append(f"{run}: {type(error).__name__}: {error}")
            continue
        elapsed = time.perf_counter() - started
        left = elapsed / number * (len(runs) - number)
        print(
            f"[export] {number} of {len(runs)}: {run} ({elapsed:.0f} s, about {left:.0f} s left)",
            file=sys.stderr,
        )
    if failed:
        print(f"error: {len(failed)} runs could not be exported:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    if arguments.to == "tensorboard":
        where = f"event files below {arguments.out}" if arguments.out else "each run's tensorboard/ folder"
    else:
        where = f"experiment {arguments.experiment} at {tracker.uri}"
    print(f"exported {len(runs)} runs to {arguments.to}: {where}")
    return 0
