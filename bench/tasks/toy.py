"""The toy task: D independent categorical variables, f(b) = Σ_d (b_d − t)².

With K = 2 classes (the default) b_d ∈ {0, 1} is a Bernoulli variable with p(b_d = 1) = softmax(θ_d)_1;
with K > 2 classes, class k has value k/(K − 1). The exact objective is
L(θ) = Σ_d Σ_k p_dk (v_k − t)², minimized at p(b = 1) → 0 for t < 0.5; straight-through type estimators
are known to settle near p ≈ t instead (Tucker et al. 2017, "REBAR"; Liu et al. 2023, "ReinMax").

Initial logits: every logit is ``init``, so every class is equally likely; ``p0`` sets the initial probability
of the last class (b = 1 for a Bernoulli) instead, the other classes sharing 1 − p0 equally, by raising the
last logit by log(p0·(K − 1)/(1 − p0)) (``init`` still shifts all logits together, which changes nothing).
``init_noise`` > 0 adds N(0, init_noise²) to every logit, drawn from torch's global generator, which the
runner seeds with the run's seed before it builds the task: each seed then starts from its own point (and a
deterministic trajectory, such as exact training, differs between seeds); at 0 (the default) nothing is
drawn and every seed starts from the same logits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bench.tasks.base import Task
from bench.tasks.checks import check_arguments, number, whole


class Toy(Task):
    latent = "categorical"
    reference = "analytic"

    def __init__(
        self,
        dim: int = 1,
        classes: int = 2,
        t: float = 0.45,
        init: float = 0.0,
        p0: float | None = None,
        init_noise: float = 0.0,
    ) -> None:
        super().__init__()
        arguments = dict(dim=dim, classes=classes, t=t, init=init, init_noise=init_noise)
        rules = {
            "dim": whole(least=1),
            "classes": whole(least=2),
            "t": number(),
            "init": number(),
            "init_noise": number(least=0),
        }
        if p0 is not None:
            arguments["p0"], rules["p0"] = p0, number(above=0, below=1)
        check_arguments(arguments, rules)
        self.t = float(t)
        logits = torch.full((dim, classes), float(init))
        if p0 is not None:  # the last class (b = 1) at p0, the others sharing 1 − p0 equally
            logits[:, -1] += math.log(float(p0) * (classes - 1) / (1 - float(p0)))
        if init_noise > 0:  # from the run's seed (module docstring); nothing drawn at 0
            logits += float(init_noise) * torch.randn(dim, classes)
        self.logits = nn.Parameter(logits)
        self.register_buffer("values", torch.linspace(0.0, 1.0, classes))
        # Every variable on its best class: the infimum of the objective (approached as p → one-hot).
        self.best_known_objective = float(dim * ((self.values - self.t) ** 2).min())

    def distribution(self, batch=None) -> Tensor:
        return self.logits

    def objective(self, batch=None):
        def f(z: Tensor) -> Tensor:
            return ((z @ self.values - self.t) ** 2).sum(-1)

        return f

    def exact_objective(self) -> Tensor:
        probs = self.logits.softmax(-1)
        return (probs * (self.values - self.t) ** 2).sum()

    def probed_parameters(self) -> dict[str, Tensor]:
        return {"logits": self.logits}

    def reference_gradient(self, batch=None) -> list[Tensor]:
        with torch.enable_grad():
            return list(torch.autograd.grad(self.exact_objective(), [self.logits]))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        probs = self.logits.softmax(-1)
        return {"objective": float(self.exact_objective()), "prob_one": float(probs[:, -1].mean())}
