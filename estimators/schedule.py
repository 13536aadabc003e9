"""Temperature annealing shared by every temperature-based estimator (Jang et al. 2017, §4.1 and App. B).

    τ(t) = max(τ_min, τ₀ · exp(−r · t)),   t = N · ⌊step / N⌋

i.e. the temperature is recomputed every N steps from the step at which it is updated, as in
Jang, Gu & Poole 2017, "Categorical Reparameterization with Gumbel-Softmax" (they use τ₀ = 1,
τ_min = 0.5, r ∈ {1e-5, 1e-4}, N = 500 for their VAE). With r = 0 (the default) τ stays τ₀.

``TemperatureEstimator`` holds the current temperature in ``self.tau`` and moves it in ``on_step``, which a
training loop calls before every step; ``on_step`` returns ``{"tau": τ}`` at the first step and whenever
τ changes, so that the harness can record the temperature curve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from estimators.base import Estimator, EstimatorError, check_temperature


@dataclass(frozen=True)
class TemperatureSchedule:
    """τ(step) = max(τ_min, τ₀·exp(−rate·t)) with t = every·⌊step/every⌋ (Jang et al. 2017)."""

    tau: float
    tau_min: float | None = None
    anneal_rate: float = 0.0
    anneal_every: int = 1

    def __post_init__(self) -> None:
        check_temperature(self.tau)
        if not (self.anneal_rate >= 0 and math.isfinite(self.anneal_rate)):
            raise EstimatorError(
                f"anneal_rate must be a finite number >= 0, got anneal_rate={self.anneal_rate}."
            )
        if int(self.anneal_every) != self.anneal_every or self.anneal_every < 1:
            raise EstimatorError(
                f"anneal_every must be an integer >= 1, got anneal_every={self.anneal_every}."
            )
        if self.anneal_rate > 0 and self.tau_min is None:
            raise EstimatorError(
                f"anneal_rate={self.anneal_rate} anneals the temperature towards 0, so it needs a floor: set "
                "tau_min (Jang et al. 2017 use tau_min=0.5)."
            )
        if self.tau_min is not None:
            check_temperature(self.tau_min)
            if self.tau_min > self.tau:
                raise EstimatorError(
                    f"tau_min={self.tau_min} is above the initial temperature tau={self.tau}; the schedule "
                    "max(tau_min, tau * exp(-anneal_rate * step)) would never use tau. Lower tau_min."
                )

    @property
    def constant(self) -> bool:
        return self.anneal_rate == 0

    def __call__(self, step: int) -> float:
        if self.constant:
            return self.tau
        updated_at = self.anneal_every * (step // self.anneal_every)
        return max(float(self.tau_min), self.tau * math.exp(-self.anneal_rate * updated_at))


class TemperatureEstimator(Estimator):
    """Base class of the estimators with a temperature τ; ``self.tau`` follows a ``TemperatureSchedule``.

    Arguments (the same keys in every temperature-based estimator's YAML): ``tau`` the initial temperature
    τ₀, ``tau_min`` the floor, ``anneal_rate`` r (0: constant τ), ``anneal_every`` N.
    """

    def __init__(
        self,
        tau: float = 1.0,
        tau_min: float | None = None,
        anneal_rate: float = 0.0,
        anneal_every: int = 1,
    ) -> None:
        super().__init__()
        self.schedule = TemperatureSchedule(float(tau), tau_min, float(anneal_rate), anneal_every)
        self.tau = self.schedule.tau

    def on_step(self, step: int) -> dict[str, float]:
        tau = self.schedule(step)
        changed, self.tau = tau != self.tau, tau
        return {"tau": tau} if changed or (step == 1 and not self.schedule.constant) else {}
