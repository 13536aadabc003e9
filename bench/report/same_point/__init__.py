"""The report's part on same-point gradient studies (``bench.campaigns.same_point``): tables and figures from
the study runs' ``study.csv`` and ``paired.csv``.

Every study run (``kind: study``) below the report's root contributes its two files; ``collect_study_tables``
concatenates them into the report folder (with the run's folder and task), and ``study_section`` renders
the Markdown and the figures from those two tables alone, so that a report rebuilt from its tables is the
same. Per task and trajectory:

- the estimators at the same parameters, aggregated over checkpoints and seeds: per seed, the geometric mean
  over the checkpoints of the MSE and of the variance relative to the baseline (``study.baseline``, default
  ``rloo``), and the mean rank by the horizon MSE ‖b‖² + V/10 (``statistics.HORIZON``); across seeds, their
  mean with its 95% t-interval over seeds (the checkpoints of one trajectory are correlated, the seeds are
  not; its coverage measured by simulating this statistic, ``coverage``), no interval with fewer than
  ``MINIMUM_SEEDS`` seeds, and a note when the seeds share one trajectory;
- per checkpoint, the rank by the horizon MSE of every estimator (rankings can change along training) and
  the test of zero bias (``grad_bias_p``, Holm-adjusted over the probes of the table);
- figures: MSE, variance and ‖g*‖ against training progress (log scale), the paired MSE ratio against the
  baseline per checkpoint with intervals, and, when several trajectories were studied, the cross-probe
  matrix (trajectory trained by A × estimator probed B).

The own-trajectory tables elsewhere in the report measure each run at its own parameters; ``mark_study_runs``
labels the study's trajectory runs there, so that the two are not confused.
"""

from bench.report.same_point.markdown import study_section
from bench.report.same_point.tables import STUDY_TABLES, collect_study_tables, mark_study_runs

__all__ = ["STUDY_TABLES", "collect_study_tables", "mark_study_runs", "study_section"]
