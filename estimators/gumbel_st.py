"""Straight-through Gumbel-Softmax (Jang et al. 2017, §2.2).

Forward: the one-hot vector D = one_hot(argmax(logits + g)), an exact sample of Cat(softmax(logits)).
Backward: through the relaxed y = softmax((logits + g)/τ), i.e. z = D + y − sg[y]. Biased.
τ can be annealed during training (``tau_min``, ``anneal_rate``, ``anneal_every``; ``estimators.schedule``).
"""

from __future__ import annotations

from torch import Tensor

from estimators.base import Noise, Objective, one_hot_like, softmax
from estimators.gumbel import perturbed_logits
from estimators.schedule import TemperatureEstimator


class GumbelST(TemperatureEstimator):
    """Straight-through Gumbel-Softmax: f(one_hot(argmax(y))) forward, gradient through y; biased."""

    latents = ("categorical",)
    unbiased = False

    def forward(self, logits: Tensor, f: Objective, samples: int = 1, noise: Noise | None = None) -> Tensor:
        self.check_samples(samples)
        perturbed = perturbed_logits(logits, samples, noise)
        relaxed = softmax(perturbed / self.tau)
        # argmax of logits + g itself, not of the rounded softmax: the class of the Gumbel-max trick, the
        # same as every other estimator's given the same noise.
        hard = one_hot_like(perturbed.detach().argmax(-1), relaxed)
        return f(hard + relaxed - relaxed.detach()).mean(0)
