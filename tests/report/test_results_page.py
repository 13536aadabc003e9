"""The results page (docs/results/) is what its committed tables give: the Markdown and every CSV byte for
byte, every figure within a small tolerance (bench.report.publish); a changed number in a committed table
changes the page; the publishing commands refuse bad input with exit 2."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
import seaborn
from matplotlib.testing.compare import compare_images

from bench.campaigns.publish import main as publish_main
from bench.cli.report import main as report_main
from bench.report.publish import PAGE, STUDIES, by_name, render_page, study_lines
from bench.report.publish.page import TABLES, WRITTEN_LIST, copy_tables, minor

ROOT = Path(__file__).resolve().parents[2]
PAGE_DIR = ROOT / "docs" / "results"
TOLERANCE = 2.0  # RMS difference of the PNGs' pixels (0-255): anti-aliasing, not content
SECTION_STUDY = "toy_estimators"  # the study regenerated in every test run: its figures draw fast
# The page's size budget: 17 studies, about 0.5 MB each (the two same-point studies keep every pair's paired
# statistics, 1 MB each, for the sentences on which pairs common random numbers sharpen). It was 5 MB for 10.
MAXIMUM_BYTES = 10 * 1024 * 1024


def committed() -> str:
    page = PAGE_DIR / PAGE
    if not page.is_file():
        pytest.fail(f"{page} is not there: python -m bench.publish writes it")
    text = page.read_text()
    drawn = re.search(r"figures drawn with matplotlib (\S+), seaborn (\S+)\.", text)
    assert drawn, "the page names the matplotlib and seaborn it was drawn with"
    if drawn.groups() != (minor(matplotlib.__version__), minor(seaborn.__version__)):
        pytest.skip(
            f"the page was drawn with matplotlib {drawn.group(1)} and seaborn {drawn.group(2)}; this is "
            f"{matplotlib.__version__} and {seaborn.__version__} (pyproject.toml pins the page's)"
        )
    return text


def figures_of(folder: Path) -> set[str]:
    """The figures of a study folder (and the numbers they draw), without its tables and the list of what
    the last rendering wrote (``WRITTEN_LIST``, absent from folders drawn before it existed)."""
    kept = (*TABLES, WRITTEN_LIST)
    return {path.name for path in folder.iterdir() if path.is_file() and path.name not in kept}


def assert_same_files(expected: Path, actual: Path) -> None:
    """Every file the rendering wrote into ``actual`` is ``expected``'s: CSVs byte for byte, PNGs within
    TOLERANCE (compare_images compares pixels: metadata such as matplotlib's version does not count)."""
    assert figures_of(actual) == figures_of(expected), f"other files than the committed ones in {expected}"
    for name in sorted(figures_of(actual)):
        if name.endswith(".png"):
            difference = compare_images(str(expected / name), str(actual / name), tol=TOLERANCE)
            assert difference is None, difference
        else:
            same = (actual / name).read_bytes() == (expected / name).read_bytes()
            assert same, f"{expected / name} differs from what its tables give"


def section_from_tables(tmp_path: Path, change=None) -> tuple[str, Path]:
    """The section of SECTION_STUDY rendered from a copy of its committed tables (``change`` edits the copy
    of summary.csv first)."""
    study = by_name()[SECTION_STUDY]
    folder = tmp_path / study.name
    folder.mkdir()
    for name in TABLES:
        if (PAGE_DIR / study.name / name).is_file():
            shutil.copyfile(PAGE_DIR / study.name / name, folder / name)
    if change is not None:
        change(folder / "summary.csv")
    return "\n".join(study_lines(study, folder)), folder


def test_one_study_section_is_what_its_committed_tables_give(tmp_path):
    page = committed()
    text, folder = section_from_tables(tmp_path)
    assert text in page, f"the page's section on {SECTION_STUDY} is not what its tables give"
    assert_same_files(PAGE_DIR / SECTION_STUDY, folder)


def test_a_changed_number_in_a_committed_table_changes_the_page(tmp_path):
    page = committed()

    def worse_final_loss(path: Path) -> None:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        row = table.index[table["status"] == "ok"][0]
        table.loc[row, "final_loss"] = repr(float(table.loc[row, "final_loss"]) * 10 + 1)
        table.to_csv(path, index=False)

    text, _ = section_from_tables(tmp_path, worse_final_loss)
    assert text not in page
    table = next(line for line in text.splitlines() if line.startswith("| estimator | seeds | final_loss"))
    assert table in page  # the same table, with another number in it
    rows = [line for line in text.splitlines() if line.startswith("| ") and "±" in line]
    assert any(row not in page for row in rows), "no row of the main table changed"


@pytest.mark.slow
def test_the_whole_page_is_what_the_committed_tables_give(tmp_path):
    page = committed()
    copy_tables(PAGE_DIR, tmp_path)
    written = render_page(tmp_path)
    assert written.read_text() == page
    for study in STUDIES:
        if (PAGE_DIR / study.name).is_dir():
            for name in TABLES:
                table = PAGE_DIR / study.name / name
                if table.is_file():
                    assert (tmp_path / study.name / name).read_bytes() == table.read_bytes()
            assert_same_files(PAGE_DIR / study.name, tmp_path / study.name)
    size = sum(path.stat().st_size for path in PAGE_DIR.rglob("*") if path.is_file())
    assert size < MAXIMUM_BYTES, f"docs/results holds {size / 1e6:.1f} MB"
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page):
        assert (PAGE_DIR / link).is_file(), f"the page shows {link}, which is not there"


def test_from_summaries_without_tables_exits_2(tmp_path, capsys):
    assert report_main(["--from-summaries", str(tmp_path)]) == 2
    assert "no study tables" in capsys.readouterr().err


def test_publish_without_runs_exits_2_and_leaves_the_tables(tmp_path, capsys):
    page = tmp_path / "page"
    copy_tables(PAGE_DIR, page)
    before = {path: path.read_bytes() for path in page.rglob("*.csv")}
    assert before
    (tmp_path / "runs").mkdir()
    assert report_main(["--publish", str(page), str(tmp_path / "runs")]) == 2
    assert "python -m bench.publish" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in page.rglob("*.csv")} == before


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--only", "nope"], "no such study"),
        (["--set", "vq_estimators-seed=1"], "expected STUDY:KEY=VALUE"),
        (["--set", "nope:seed=1"], "no study 'nope'"),
        (["--jobs", "0"], "--jobs must be at least 1"),
    ],
)
def test_publish_refuses_bad_input(arguments, message, capsys):
    assert publish_main(arguments) == 2
    assert message in capsys.readouterr().err


def test_publish_dry_run_prints_each_study_once_with_its_overrides(capsys):
    assert publish_main(["--dry-run", "--set", "vq_estimators:seed=0,1,2,3,4", "--results", "elsewhere"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(STUDIES)
    vq = next(line for line in lines if " vq_estimators: " in line)
    assert "seed=0,1,2,3,4" in vq and "seed=0,1,2 " not in vq
    assert "hydra.sweep.dir=elsewhere/publish/vq_estimators" in vq


def test_python_m_bench_publish_help():
    result = subprocess.run(
        [sys.executable, "-m", "bench.publish", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0 and "--set STUDY:KEY=VALUE" in result.stdout
