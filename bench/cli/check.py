"""``python -m bench.check DIR``: check every run below DIR against the results contract
(``python -m bench.check unbiasedness OVERRIDES``: check an estimator's unbiasedness,
``bench.cli.unbiasedness``).

Exit 0 when every run follows it; exit 1 with one line per problem otherwise (exit 2: DIR is not a folder or
holds no run). Problems: a ``summary.json`` that does not parse, lacks a field, has a field of the wrong type
or a ``NaN`` (strict JSON has none), or has a status or reference kind the contract does not know; a
``metrics.csv`` whose header is not ``step,metric,value`` or whose rows do not parse; and a run folder (one
with ``.hydra/``) without ``summary.json``: a run that was killed, or is still running (``--allow-incomplete``
accepts those). A study run (``kind: study``) that finished also needs ``study.csv`` and ``paired.csv`` with
the contract's headers (``bench.formats.contract.STUDY_FILES``), rows that parse, and one ``params_digest``
per checkpoint, the same in both files.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from bench.formats.contract import (
    METRICS_FILE,
    METRICS_HEADER,
    NAME_FIELDS,
    OK,
    RECOMMENDATION_FILE,
    REPORT_DIR,
    STUDY_FILES,
    SUMMARY_FILE,
    recommendation_problems,
    summary_problems,
)
from bench.formats.names import problem

REPORT_DIRS = (REPORT_DIR,)


def reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not strict JSON (a number that does not exist is null)")


def read_summary(path: Path) -> tuple[dict | None, list[str]]:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        return None, [f"cannot read it: {error}"]
    except UnicodeDecodeError as error:
        return None, [f"is not UTF-8 text ({error.reason} at byte {error.start})"]
    try:
        return json.loads(text, parse_constant=reject_constant), []
    except ValueError as error:
        return None, [f"does not parse as strict JSON: {error}"]
    except RecursionError:
        return None, ["is nested too deep to parse (a summary is one flat JSON object)"]


def metrics_problems(path: Path) -> list[str]:
    try:
        with path.open(newline="") as handle:
            rows = csv.reader(handle)
            header = next(rows, [])
            if tuple(header) != METRICS_HEADER:
                return [f"header is {','.join(header) or '(empty)'}, not {','.join(METRICS_HEADER)}"]
            for number, row in enumerate(rows, start=2):
                if len(row) != 3:
                    return [f"line {number} has {len(row)} fields, not 3"]
                try:
                    int(row[0])
                    value = float(row[2])
                except ValueError:
                    return [f"line {number} is not step (integer), metric, value (number): {','.join(row)}"]
                if math.isinf(value) and row[2] not in ("inf", "-inf"):
                    return [f"line {number}: value {row[2]!r} is not a number"]
    except OSError as error:
        return [f"cannot read it: {error}"]
    except UnicodeDecodeError as error:
        return [f"is not UTF-8 text ({error.reason} at byte {error.start})"]
    except csv.Error as error:  # a field over the csv module's limit (131,072 characters), a NUL byte
        return [f"is not a readable CSV file ({error})"]
    return []


STUDY_NUMBERS = {"seed": int, "checkpoint": int, "step": int, "samples": float, "baseline_samples": float}
STUDY_KEY = ("trajectory", "seed", "checkpoint")


def study_problems(run: Path) -> list[str]:
    """What is wrong with a finished study run's ``study.csv`` and ``paired.csv``; empty when nothing is."""
    problems: list[str] = []
    digests: dict[str, dict[tuple[str, ...], set[str]]] = {}
    for name, header in STUDY_FILES.items():
        path = run / name
        if not path.is_file():
            problems.append(f"{run}: a finished study without {name}")
            continue
        found: dict[tuple[str, ...], set[str]] = {}
        try:
            with path.open(newline="") as handle:
                rows = csv.reader(handle)
                columns = next(rows, [])
                if tuple(columns) != header:
                    problems.append(
                        f"{path}: header is {','.join(columns) or '(empty)'}, not {','.join(header)}"
                    )
                    continue
                for number, row in enumerate(rows, start=2):
                    problem = study_row_problem(dict(zip(header, row, strict=False)), len(row), len(header))
                    if problem:
                        problems.append(f"{path}: line {number} {problem}")
                        break
                    record = dict(zip(header, row, strict=True))
                    found.setdefault(tuple(record[key] for key in STUDY_KEY), set()).add(
                        record["params_digest"]
                    )
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            problems.append(f"{path}: cannot read it: {error}")
            continue
        digests[name] = found
        for key, values in found.items():
            if len(values) > 1:
                problems.append(
                    f"{path}: checkpoint {'/'.join(key)} has {len(values)} params_digest values; every "
                    "estimator at one checkpoint is probed at the same parameters"
                )
    study, paired = (digests.get(name, {}) for name in STUDY_FILES)
    for key, values in paired.items():
        if key in study and values != study[key]:
            problems.append(f"{run}: checkpoint {'/'.join(key)} has another params_digest in paired.csv")
    return problems


def study_row_problem(record: dict[str, str], length: int, expected: int) -> str | None:
    if length != expected:
        return f"has {length} fields, not {expected}"
    for column, kind in STUDY_NUMBERS.items():
        if column in record and not (column in ("samples", "baseline_samples") and record[column] == ""):
            try:
                kind(record[column])
            except ValueError:
                return f"has {column} {record[column]!r}, not a number"
    try:
        float(record["value"])
    except ValueError:
        return f"has value {record['value']!r}, not a number"
    if not record.get("params_digest"):
        return "has no params_digest"
    return None


def run_folders(root: Path) -> list[Path]:
    """Every folder below ``root`` (itself included) that holds a run: a ``summary.json`` or a ``.hydra/``."""
    found = {path.parent for path in root.rglob(SUMMARY_FILE)}
    found |= {path.parent for path in root.rglob(".hydra") if path.is_dir()}
    return sorted(run for run in found if not set(run.relative_to(root).parts) & set(REPORT_DIRS))


def name_problems(summary: object) -> list[str]:
    """The summary's names (``NAME_FIELDS``) that are not safe names (``bench.formats.names``)."""
    found = []
    for name in NAME_FIELDS if isinstance(summary, dict) else ():
        value = summary.get(name)
        why = problem(value) if isinstance(value, str) else None
        if why is not None:
            found.append(f"'{name}' {value!r:.60} {why}: names become folder and file names")
    return found


def check_run(run: Path, allow_incomplete: bool = False) -> list[str]:
    """One line per problem of the run in folder ``run``."""
    summary_path, metrics_path = run / SUMMARY_FILE, run / METRICS_FILE
    if not summary_path.exists():
        if allow_incomplete:
            return []
        return [
            f"{run}: no summary.json: the run is incomplete (killed, or still running); "
            "--allow-incomplete accepts it"
        ]
    summary, problems = read_summary(summary_path)
    if summary is not None:
        problems = summary_problems(summary) + name_problems(summary)
    lines = [f"{summary_path}: {problem}" for problem in problems]
    if metrics_path.exists():
        lines += [f"{metrics_path}: {problem}" for problem in metrics_problems(metrics_path)]
    elif (
        isinstance(summary, dict) and summary.get("status") == OK and summary.get("kind", "train") == "train"
    ):
        lines.append(f"{run}: status ok but no metrics.csv")
    if isinstance(summary, dict) and summary.get("kind") == "study" and summary.get("status") == OK:
        lines += study_problems(run)
    return lines


def recommendation_files(root: Path) -> list[Path]:
    """The ``recommendation.json`` files below ``root`` (``python -m bench.recommend``'s answers)."""
    return sorted(root.rglob(RECOMMENDATION_FILE))


def check_recommendation(path: Path) -> list[str]:
    """What is wrong with one ``recommendation.json`` against the contract (``RECOMMENDATION_FIELDS``)."""
    document, problems = read_summary(path)
    return problems if document is None else recommendation_problems(document)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["unbiasedness"]:  # python -m bench.check unbiasedness OVERRIDES (bench.cli.unbiasedness)
        from bench.cli.unbiasedness import main as unbiasedness

        return unbiasedness(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", type=Path, nargs="+", metavar="DIR", help="folders holding runs")
    parser.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="accept run folders without summary.json (runs still going, or killed)",
    )
    arguments = parser.parse_args(argv)
    problems, count, answers = [], 0, 0
    for root in arguments.roots:
        if not root.is_dir():
            print(f"error: {root} is not a folder; give the folder that holds your runs.", file=sys.stderr)
            return 2
        runs = run_folders(root)
        count += len(runs)
        for run in runs:
            try:
                problems += check_run(run, arguments.allow_incomplete)
            except Exception as error:  # noqa: BLE001 - one unreadable run is named, the others checked
                problems.append(f"{run}: cannot check it: {type(error).__name__}: {error}")
        recommendations = recommendation_files(root)
        count += len(recommendations)
        answers += len(recommendations)
        for path in recommendations:
            problems += [f"{path}: {problem}" for problem in check_recommendation(path)]
    if count == 0:
        print(
            "error: no runs (summary.json or .hydra/) below " + ", ".join(map(str, arguments.roots)),
            file=sys.stderr,
        )
        return 2
    if problems:
        print("\n".join(problems))
        print(f"{len(problems)} problem(s) in {count} run folder(s)", file=sys.stderr)
        return 1
    also = f" and {answers} recommendation(s)" if answers else ""
    print(f"{count - answers} run(s){also} follow the results contract")
    return 0


if __name__ == "__main__":
    sys.exit(main())
