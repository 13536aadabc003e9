"""The documentation holds together: every relative link and anchor resolves, the README is a front door
(at most 200 lines), and the blocks a test leaves out are few and say why."""

from __future__ import annotations

import pytest

from tests.docs.pages import PAGES, all_blocks, anchors, broken_links, relative, slug, tables
from tests.helpers import ROOT


@pytest.mark.parametrize("page", PAGES, ids=relative)
def test_every_relative_link_and_anchor_resolves(page):
    assert not broken_links(page)


def test_the_link_check_finds_a_missing_file_and_a_missing_heading():
    # Negative control: a link to a page that does not exist and an anchor that is no heading are found.
    page = ROOT / "docs" / "guide.md"
    text = "# Title\n\n## One run\n\n[a](nowhere.md) [b](reference.md#no-such-table) [c](#one-run) [d](#x)\n"
    problems = broken_links(page, text)
    assert len(problems) == 3, problems
    assert "nowhere.md" in problems[0] and "no-such-table" in problems[1] and "#x" in problems[2]


def test_anchors_are_githubs():
    assert slug("`python -m bench.perf`") == "python--m-benchperf"
    assert slug("RELAX's toy problem") == "relaxs-toy-problem"
    assert slug("summary.json") == "summaryjson"
    assert anchors("## Notes\n\n```\n# not a heading\n```\n\n## Notes\n") == {"notes", "notes-1"}


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move reference and how-to into docs/"
    # The two set-up commands (CI's .ci/run runs them) are its first lines of substance.
    substance = [line for line in lines[1:] if line.strip()]
    first_block = substance.index("```bash")
    assert substance[first_block + 1].startswith('pip install -e ".[dev]" && python -m bench')
    assert substance[first_block + 2].split("#")[0].strip() == "pytest"
    assert first_block <= 6, "the set-up commands come first, after a short paragraph of what this is"


def repeated_tables(texts: dict[str, str]) -> tuple[int, list[str]]:
    """How many tables the pages hold, and each one that repeats another (a table is its header and the
    names in its first column)."""
    seen: dict[tuple, str] = {}
    repeated = []
    for name, text in texts.items():
        for rows in tables(text):
            key = (tuple(rows[0]), tuple(row[0] for row in rows[2:]))
            if key in seen:
                repeated.append(f"{name} repeats a table of {seen[key]}: {rows[0]}")
            seen[key] = name
    return len(seen), repeated


def test_each_table_exists_once():
    count, repeated = repeated_tables({relative(page): page.read_text() for page in PAGES})
    assert not repeated and count > 15, (count, repeated)
    # Negative control: the metric table copied into another page is found.
    reference = (ROOT / "docs" / "reference.md").read_text()
    metric_table = reference[reference.index("| metric | definition |") :].split("\n\n")[0]
    assert len(repeated_tables({"reference": reference, "copy": metric_table + "\n"})[1]) == 1


def test_blocks_left_out_say_why_and_are_rare():
    left_out = [block for language in ("python", "bash") for block in all_blocks(language) if block.not_run]
    assert all(len(block.not_run) > 10 for block in left_out), [block.name for block in left_out]
    assert len(left_out) <= 3, [f"{block.name}: {block.not_run}" for block in left_out]
