"""Results folders are untrusted input (shared on clusters, sent as tarballs, changed in pull requests): the
report, ``--from-tables``, ``--publish`` and ``--from-summaries`` write nothing outside their output folder
whatever a summary says, publishing removes only the files it wrote and refuses a symbolic-linked study
folder, and ``bench.report`` and ``bench.check`` name every unreadable file and go on with the other runs.

Every file the commands write is listed (a snapshot of the whole temporary tree before and after each).
One real toy run is made once; the crafted runs are copies of it with one thing changed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.cli.check import main as check_main
from bench.cli.check import name_problems
from bench.cli.report import main as report_main
from bench.formats.contract import PROBE_FIELDS, summary_problems
from bench.formats.names import file_name
from bench.report.publish.page import WRITTEN_LIST
from bench.run.runner import run
from tests.helpers import make_config

CRAFTED = "../../elsewhere/x"  # a task name that climbs two folders from the report folder
STUDY = "toy_estimators"  # a study of the results page whose figures draw from toy runs


def snapshot(root: Path) -> dict[Path, tuple[int, int]]:
    """Every file below ``root`` with its modification time and size."""
    return {
        path: (path.stat().st_mtime_ns, path.stat().st_size)
        for path in root.rglob("*")
        if path.is_file() and not path.is_symlink()
    }


def written(root: Path, before: dict[Path, tuple[int, int]]) -> set[Path]:
    """The files below ``root`` created or changed since ``before``."""
    return {path for path, stamp in snapshot(root).items() if before.get(path) != stamp}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """``runs/``: a run whose summary names the task ``CRAFTED`` and three runs with a broken file each.

    The crafted run is a real toy run's files with the task renamed and its probe left out (reference
    ``none``, only the objective in metrics.csv), so that the report draws few figures: what is tested is
    where they go, not what they show.
    """
    base = tmp_path_factory.mktemp("untrusted")
    runs = base / "work" / "results" / "runs"
    config = make_config(
        "task=toy", "estimator=rloo", "samples=2", "steps=4", "probe.every=2", "probe.draws=4", "threads=1"
    )
    source = base / "source"
    assert run(config, source)["status"] == "ok"
    summary = json.loads((source / "summary.json").read_text())
    summary.update({name: None for name in PROBE_FIELDS}, task=CRAFTED, reference="none", step_time_ms=None)
    metrics = [line for line in (source / "metrics.csv").read_text().splitlines() if ",objective," in line]
    crafted = runs / "crafted"
    crafted.mkdir(parents=True)
    (crafted / "summary.json").write_text(json.dumps(summary))
    (crafted / "metrics.csv").write_text("\n".join(["step,metric,value", *metrics]) + "\n")
    assert (
        metrics
        and summary_problems(summary) == []
        and name_problems(summary)
        == [f"'task' {CRAFTED!r} contains a path separator: names become folder and file names"]
    )
    for name in ("not_utf8", "nested", "oversized"):
        shutil.copytree(crafted, runs / name)
    (runs / "not_utf8" / "summary.json").write_bytes(b'{"task": "\xff\xfe toy"}')
    (runs / "nested" / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
    other_code = {**summary, "source_hash": "0123456789abcdef"}  # a run of another version of the code
    (runs / "oversized" / "summary.json").write_text(json.dumps(other_code))
    with (runs / "oversized" / "metrics.csv").open("a") as handle:
        handle.write(f"4,{'m' * 200_000},1.0\n")  # a field over the csv module's 131,072 characters
    return base


def test_report_and_from_tables_write_only_into_their_folder_and_name_the_bad_files(results, capsys):
    root, runs = results, results / "work" / "results" / "runs"
    out = results / "work" / "report"
    before = snapshot(root)
    assert report_main([str(runs), "--out", str(out)]) == 0
    files = written(root, before)
    assert files and all(out in path.parents for path in files), sorted(map(str, files))
    figure = file_name(f"{CRAFTED}_objective", ".png")  # the crafted task's figure, under a safe name
    assert figure == "_.._elsewhere_x_objective.png" and (out / figure).is_file()
    report = (out / "report.md").read_text()
    assert f"]({figure})" in report  # linked by that name
    for name, file in (
        ("not_utf8", "summary.json"),
        ("nested", "summary.json"),
        ("oversized", "metrics.csv"),
    ):
        assert str(runs / name / file) in report, name  # each unreadable file named in the report
    summary = (out / "summary.csv").read_text()
    assert "crafted" in summary and "oversized" in summary  # the other runs; a summary beside a bad file
    assert "**Mixed code versions.** These runs come from 2 versions of the code" in report
    capsys.readouterr()

    again = results / "work" / "again"
    before = snapshot(root)
    assert report_main([str(out), "--from-tables", "--out", str(again)]) == 0
    files = written(root, before)
    assert files and all(again in path.parents for path in files), sorted(map(str, files))

    # An output folder holding a symbolic link out of it (summary.csv -> a file elsewhere) is refused.
    target = root / "work" / "victim.csv"
    target.write_text("mine\n")
    (again / "summary.csv").unlink()
    (again / "summary.csv").symlink_to(target)
    assert report_main([str(runs), "--out", str(again)]) == 2
    assert "would lie outside" in capsys.readouterr().err and target.read_text() == "mine\n"


def test_check_names_the_three_unreadable_files_and_the_unsafe_name(results, capsys):
    runs = results / "work" / "results" / "runs"
    assert check_main([str(runs)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    for name, words in (
        ("not_utf8/summary.json", "is not UTF-8 text"),
        ("nested/summary.json", "nested too deep"),
        ("oversized/metrics.csv", "is not a readable CSV file"),
        ("crafted/summary.json", "'task' '../../elsewhere/x' contains a path separator"),
    ):
        assert any(str(runs / name) in line and words in line for line in lines), (name, lines)
    assert len(lines) == 5, lines  # the oversized run's summary too names the crafted task


def test_publishing_writes_inside_the_page_folder_and_removes_only_what_it_wrote(results, capsys):
    root = results
    page = results / "work" / "page"
    study_runs = results / "work" / "results" / "publish" / STUDY
    study_runs.mkdir(parents=True)
    for name in ("crafted",):
        shutil.copytree(results / "work" / "results" / "runs" / name, study_runs / name)
    mine = page / STUDY
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("a user's notes\n")
    (mine / "my_plot.png").write_bytes(b"not drawn by the page")

    before = snapshot(root)
    assert report_main([str(results / "work" / "results"), "--publish", str(page)]) == 0
    files = written(root, before)
    assert files and all(page in path.parents for path in files), sorted(map(str, files))
    listed = (mine / WRITTEN_LIST).read_text().split()
    assert file_name(f"{CRAFTED}_objective", ".png") in listed and "notes.txt" not in listed, listed

    before = snapshot(root)
    assert report_main([str(page), "--from-summaries"]) == 0
    files = written(root, before)
    assert files and all(page in path.parents for path in files), sorted(map(str, files))
    assert (mine / "notes.txt").read_text() == "a user's notes\n"  # a user's files stay
    assert (mine / "my_plot.png").read_bytes() == b"not drawn by the page"
    capsys.readouterr()

    # A study folder that is a symbolic link is refused; the folder it points to is left as it was.
    linked = results / "work" / "linked_page"
    linked.mkdir()
    elsewhere = results / "work" / "elsewhere_study"
    shutil.copytree(mine, elsewhere)
    (linked / STUDY).symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(root)
    assert report_main([str(linked), "--from-summaries"]) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert written(root, before) == set()
