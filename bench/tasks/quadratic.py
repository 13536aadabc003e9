"""The quadratic task: full-batch gradient descent on f(θ) = ½ Σ_i λ_i θ_i², a yardstick for tuning.

The eigenvalues λ_1 … λ_D are log-spaced from ``smallest`` to ``largest``; every coordinate starts at
``start`` and the minimum is θ = 0 (objective 0). Nothing is sampled and there is no data (latent kind
``none``: use ``estimator=none``), so the gradient λ·θ is exact and a run is deterministic. With plain
gradient descent at a fixed step size η (``optimizer=sgd``, momentum 0) each coordinate contracts by
(1 − ηλ_i) per step, so after T steps

    f(θ_T) = ½ Σ_i λ_i (1 − ηλ_i)^{2T} start²,

a convex function of η whose minimiser tends to 2/(λ_min + λ_max) as T grows (Nesterov 2004, "Introductory
Lectures on Convex Optimization", Theorem 2.1.15); for a finite T it is found by a one-dimensional
minimisation. The tuning protocol's test (``tests/campaigns/test_tuning.py``) does that and checks that the
protocol (``bench.campaigns.tuning``) picks the grid's nearest step size.

``evaluate()`` returns ``objective`` = f(θ) (exact: the task has no data, hence no validation split).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bench.tasks.base import Task
from bench.tasks.checks import check_arguments, number, whole


class Quadratic(Task):
    latent = "none"
    reference = "analytic"
    best_known_objective = 0.0

    def __init__(
        self, dim: int = 10, smallest: float = 0.01, largest: float = 1.0, start: float = 1.0
    ) -> None:
        super().__init__()
        check_arguments(
            dict(dim=dim, smallest=smallest, largest=largest, start=start),
            {
                "dim": whole(least=1),
                "smallest": number(above=0).explained("It is the smallest eigenvalue λ_min."),
                "largest": number(least=smallest).explained("It is the largest eigenvalue λ_max >= λ_min."),
                "start": number(),
            },
        )
        eigenvalues = torch.logspace(math.log10(smallest), math.log10(largest), dim, dtype=torch.float64)
        self.register_buffer("eigenvalues", eigenvalues.float())
        self.theta = nn.Parameter(torch.full((dim,), float(start)))

    def distribution(self, batch=None) -> Tensor:
        """θ itself: nothing is sampled; the ``none`` estimator evaluates f at it."""
        return self.theta

    def objective(self, batch=None):
        eigenvalues = self.eigenvalues
        return lambda theta: 0.5 * (eigenvalues * theta**2).sum(-1)

    def probed_parameters(self) -> dict[str, Tensor]:
        return {"theta": self.theta}

    def reference_gradient(self, batch=None) -> list[Tensor]:
        return [(self.eigenvalues * self.theta).detach()]

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        return {"objective": float(self.objective()(self.theta))}
