"""Markdown tables: the one way the report, the results page and the tools print a table."""

from __future__ import annotations

from typing import Any


def markdown_table(frame: Any) -> str:
    """A pandas DataFrame (anything with ``columns`` and ``itertuples``) as a Markdown table."""
    header = "| " + " | ".join(str(column) for column in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])
