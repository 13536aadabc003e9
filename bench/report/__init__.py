"""Reports on runs: ``python -m bench.report DIR`` (``cli``) writes tables, figures and report.md.

Modules by concern: ``read`` (run folders and the tidy tables summary.csv / curves.csv), ``labels`` (what
varies between runs, from their resolved configs), ``declarations`` (a task's own sections, from
``task.report`` in its config), ``statistics`` (the one interval over seeds of every table and figure band),
``gradients`` (where configurations are compared, the bias test's verdicts, MSE at a compute budget),
``comparisons`` (rankings paired over seeds, pairwise tests, the critical-difference diagram), ``survival``
(time to target, Kaplan–Meier), ``figures``, ``markdown``, ``write`` (runs → tables → report); its command
line is ``bench.cli.report``. It reads the results contract (``bench.formats.contract``) and nothing of the
runner's.
"""

from bench.report.markdown import ReportOptions
from bench.report.read import load_runs
from bench.report.statistics import aggregate, interval, mean_ci
from bench.report.write import write_from_tables, write_report

__all__ = [
    "ReportOptions",
    "aggregate",
    "interval",
    "load_runs",
    "mean_ci",
    "write_from_tables",
    "write_report",
]
