"""``python -m bench.recommend``: which estimator, learning rate (and optimizer) to use for a task, with the
evidence for why and the caveats.

A budgeted protocol (``recommend.budget_minutes``, default 10 on 2 cores), over every estimator that fits the
task at equal cost in evaluations of f (``plan``):

1. **pilot**: one short run per candidate, timing it; the budget then sets the steps, the grid and the seeds;
2. **stage 1**: every candidate at each learning rate of a small log-spaced grid around its optimizer's
   configured one (the tuning protocol's first stage), scored on the final (validation) objective;
3. **stage 2**: the leaders at their best learning rate on fresh seeds, compared paired over seeds
   (``decide``): ties are reported as ties;
4. **evidence**: every candidate's gradient probed at the same parameters at checkpoints along the leader's
   trajectory (``evidence``): the test of zero bias, squared bias, variance and the horizon MSE;
5. **the answer** with its caveats, printed and written as ``recommendation.json`` (results contract:
   ``RECOMMENDATION_FIELDS``; ``python -m bench.check`` validates it) and ``recommendation.md``.

Re-running the same command continues where it stopped (``protocol``).
"""

from bench.campaigns.recommend.decide import markdown, write
from bench.campaigns.recommend.plan import RecommendFailed
from bench.campaigns.recommend.protocol import run_protocol
from bench.campaigns.recommend.settings import Settings, parse, split_overrides

__all__ = ["RecommendFailed", "Settings", "markdown", "parse", "run_protocol", "split_overrides", "write"]
