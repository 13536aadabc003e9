"""Same-point gradient studies: every estimator probed at the same parameters (``docs/design.md``, "Where an
estimator is measured").

A probe inside a training run measures the estimator that trains it at the parameters it reached; after
step 0 two estimators are measured at different points, and the point dominates the reading (the scale of
the true gradient changes by orders of magnitude along training; a converged, peaked distribution has a tiny
variance whatever the estimator). A study compares gradient quality where estimator papers do, at the same
points (Tucker et al. 2017, "REBAR"; Dong, Mnih & Tucker 2020, "DisARM"; Shi et al. 2022, "RODEO"):

1. a trajectory is trained by one estimator (the run's ``estimator``; ``exact`` where the task enumerates),
   saving checkpoints at ``checkpoint.steps`` (``bench.run.checkpoint``);
2. at every checkpoint of ``study.steps``, every sampling estimator that fits the task
   (``bench.campaigns.same_point.roster``) draws M = ``study.draws`` gradient estimates on the probe batch,
   with its state fixed at the checkpoint and common random numbers shared by all
   (``bench.campaigns.same_point.measure``), against one reference gradient;
3. per checkpoint, the probe statistics of each estimator (``bench.run.probe.statistics``) go to ``study.csv``
   and paired comparisons of every two estimators (``bench.campaigns.same_point.paired``) to ``paired.csv``
   (``bench.formats.contract.STUDY_HEADER``, ``PAIRED_HEADER``); ``python -m bench.report`` aggregates them
   over checkpoints and seeds (``bench.report.same_point``).

The runner runs a study when the config has a ``study`` node (``conf/experiment/*_gradient_study.yaml``):
the run is the trajectory, its summary says ``kind: study``.
"""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bench.campaigns.same_point.run import PAIRED_FILE, STUDY_FILE, run_study
from bench.run import runner


def run(config: DictConfig, directory: Path) -> dict[str, Any]:
    """One run of ``config`` into ``directory`` (``bench.run.runner.run``), a same-point study when the config
    has a ``study`` node."""
    return runner.run(config, directory, study=run_study)


__all__ = ["PAIRED_FILE", "STUDY_FILE", "run", "run_study"]
