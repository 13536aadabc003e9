"""The two-stage tuning protocol (``python -m bench.tune``, ``bench.cli.tune``): tune every optimizer of a
study the same way, then rerun what was chosen.

An optimizer comparison that does not tune each optimizer by the same rule measures the learning rate, not
the optimizer (Choi et al. 2019, "On Empirical Comparisons of Optimizers for Deep Learning"; Sivaprasad et
al. 2020, "Optimizer Benchmarking Needs to Account for Hyperparameter Tuning"). The protocol follows DeepOBS
(Schneider, Balles & Hennig 2019): a grid search scored on held-out data, then the best setting rerun with
fresh seeds and reported on the test set.

- **Stage 1**: for every optimizer of the study (``tuning.optimizers``) and every condition
  (``tuning.conditions``, tuned separately: e.g. each estimator, or each vocabulary size), every point of
  the optimizer's grid (the learning rate, log-spaced, and any other setting the study lists, e.g.
  Lookahead's k and α) runs with each of the ``tuning.seeds``. It is one Hydra multirun per optimizer
  through Hydra's basic sweeper (``python -m bench -m ...``, the command ``--dry-run`` prints), into
  ``ROOT/tune/<optimizer>/``, so that it resumes like every sweep: runs that finished are skipped.
- **The choice** (``choose``): per optimizer and condition, the setting with the lowest mean over the
  stage-1 seeds of the final ``tuning.metric`` (default ``validation_objective``, the validation split; a
  task that records none, such as ``toy``, ``gaussian`` or ``quadratic``, whose objective is exact and has no
  data, is scored on ``objective``). A run that diverged, failed or was skipped scores +∞, so a setting with
  such a seed is never chosen over one without; ties go to the first setting in grid order. The grid, every
  run's score, the rule, the budget and the choice are written to ``ROOT/tuning.json``.
- **Stage 2**: every chosen setting reruns with the ``tuning.final_seeds`` (at least
  ``MINIMUM_FINAL_SEEDS``, disjoint from the stage-1 seeds, so the reported numbers are not the ones that
  chose the setting), one Hydra multirun per optimizer and condition, into
  ``ROOT/final/<optimizer>[/<condition>]/``. ``python -m bench.report ROOT`` reports them on the test
  objective (``bench.report.tuning``).

ROOT is ``hydra.sweep.dir`` (an experiment sets it; ``hydra.sweep.dir=DIR`` on the command line wins). The
study's settings are the ``tuning`` node of its experiment config; the runs themselves do not carry it
(``~tuning``), so a changed grid leaves the runs that are still in it finished. Every other override on the
command line (``steps=100``, ``hydra/launcher=joblib``) applies to every run of both stages.
"""

from bench.campaigns.tuning.choice import (
    Outcome,
    choice_lines,
    choose,
    load_tuning,
    outcome,
    stage_one_outcomes,
    write_tuning,
)
from bench.campaigns.tuning.plan import (
    Point,
    Sweep,
    TuningPlan,
    canonical,
    plan_from_command_line,
    run_identity,
)
from bench.campaigns.tuning.spec import (
    DEFAULT_METRIC,
    FALLBACK_METRIC,
    MINIMUM_FINAL_SEEDS,
    NOT_FINISHED,
    STAGE_ONE_DIR,
    STAGE_TWO_DIR,
    Spec,
    parse_spec,
    rule_text,
)
from bench.formats.contract import TUNING_FILE

__all__ = [
    "DEFAULT_METRIC",
    "FALLBACK_METRIC",
    "MINIMUM_FINAL_SEEDS",
    "NOT_FINISHED",
    "STAGE_ONE_DIR",
    "STAGE_TWO_DIR",
    "TUNING_FILE",
    "Outcome",
    "Point",
    "Spec",
    "Sweep",
    "TuningPlan",
    "canonical",
    "choice_lines",
    "choose",
    "load_tuning",
    "outcome",
    "parse_spec",
    "plan_from_command_line",
    "rule_text",
    "run_identity",
    "stage_one_outcomes",
    "write_tuning",
]
