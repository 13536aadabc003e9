"""Reports on runs: ``python -m bench.report DIR`` (``cli``) writes tables, figures and report.md.

Modules by concern: ``read`` (run folders and the tidy tables summary.csv / curves.csv), ``labels`` (what
varies between runs, from their resolved configs), ``declarations`` (a task's own sections, from
``task.report`` in its config), ``statistics`` (mean ± 95% t-interval over seeds, aggregates), ``figures``,
``markdown``, ``write`` (runs → tables → report) and ``cli``. It reads the results contract
(``bench.contract``) and nothing of the runner's.
"""

from bench.report.cli import main
from bench.report.read import load_runs
from bench.report.statistics import aggregate, mean_ci
from bench.report.write import write_from_tables, write_report

__all__ = ["aggregate", "load_runs", "main", "mean_ci", "write_from_tables", "write_report"]
