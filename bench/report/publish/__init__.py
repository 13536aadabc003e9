"""The results page (``docs/results/``): the studies it shows (``studies``, one declarative table) and the
page written from their runs or from its committed tables (``page``). ``python -m bench.publish`` runs the
studies and writes the page; ``python -m bench.report --publish OUT ROOT`` writes it from the runs below
ROOT, ``python -m bench.report --from-summaries OUT`` from the tables in OUT."""

from bench.report.publish.page import PAGE, render_page, study_lines, write_page
from bench.report.publish.studies import DEFAULT_BUDGET, STUDIES, PageStudy, by_name

__all__ = [
    "DEFAULT_BUDGET",
    "PAGE",
    "STUDIES",
    "PageStudy",
    "by_name",
    "render_page",
    "study_lines",
    "write_page",
]
