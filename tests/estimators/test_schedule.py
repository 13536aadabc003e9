"""The temperature schedule τ = max(τ_min, τ₀·exp(−r·t)), t = N·⌊step/N⌋ (Jang et al. 2017), in every
temperature-based estimator, and its record in the run's metrics."""

import csv
import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from bench.run.runner import run
from estimators import EstimatorError, StraightThrough, TemperatureSchedule
from tests.helpers import CONF

TEMPERATURE_ESTIMATORS = ["gumbel", "gumbel_st", "st", "reinmax", "gumbel_rao"]


def test_values_by_hand():
    schedule = TemperatureSchedule(tau=2.0, tau_min=1.0, anneal_rate=1e-3, anneal_every=100)
    assert schedule(1) == schedule(99) == 2.0  # not updated before step N
    assert schedule(100) == pytest.approx(2.0 * math.exp(-0.1))  # updated at t = 100
    assert schedule(250) == pytest.approx(2.0 * math.exp(-0.2))  # t = 200 until step 299
    assert schedule(1000) == 1.0  # 2·e^{-1} = 0.74 < τ_min: the floor


def test_constant_without_a_rate():
    schedule = TemperatureSchedule(tau=0.7)
    assert {schedule(step) for step in (1, 10, 10**6)} == {0.7}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tau": 1.0, "anneal_rate": 1e-4}, "tau_min"),
        ({"tau": 1.0, "tau_min": 2.0}, "above the initial temperature"),
        ({"tau": 1.0, "anneal_rate": -1.0}, "anneal_rate"),
        ({"tau": 1.0, "anneal_every": 0}, "anneal_every"),
        ({"tau": 1.0, "anneal_every": 2.5}, "anneal_every"),
        ({"tau": 0.0}, "temperature"),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(EstimatorError, match=message):
        TemperatureSchedule(**settings)


@pytest.mark.parametrize("name", TEMPERATURE_ESTIMATORS)
def test_every_temperature_estimator_follows_the_schedule(name):
    node = OmegaConf.load(CONF / "estimator" / f"{name}.yaml")
    node.pop("name")
    estimator = instantiate(node, tau=3.0, tau_min=1.0, anneal_rate=0.01, anneal_every=10)
    assert estimator.on_step(1) == {"tau": 3.0}  # the starting temperature is recorded
    assert estimator.on_step(9) == {}  # unchanged: nothing to record
    assert estimator.on_step(10) == {"tau": pytest.approx(3.0 * math.exp(-0.1))}
    assert estimator.tau == pytest.approx(3.0 * math.exp(-0.1))
    assert estimator.on_step(1000) == {"tau": 1.0}


def test_the_estimator_uses_the_scheduled_temperature():
    # Straight-through's backward for f(z) = w·z is (1/τ)(diag p_τ − p_τ p_τᵀ)·w, p_τ = softmax(θ/τ): after
    # the schedule has moved τ, the gradient must be the one at the new τ.
    estimator = StraightThrough(tau=2.0, tau_min=0.5, anneal_rate=0.1, anneal_every=5)
    estimator.on_step(7)  # t = 5: τ = 2·e^{-0.5}
    tau = 2.0 * math.exp(-0.5)
    logits = torch.tensor([0.2, -0.5, 1.0], requires_grad=True)
    weights = torch.tensor([1.0, -1.0, 0.5])
    gradient = torch.autograd.grad(estimator(logits, lambda z: z @ weights).sum(), logits)[0]
    probs = (logits.detach() / tau).softmax(-1)
    expected = (torch.diag(probs) - torch.outer(probs, probs)) @ weights / tau
    torch.testing.assert_close(gradient, expected)


def test_the_runner_records_the_temperature(config_factory, tmp_path):
    config = config_factory(
        "task=toy",
        "estimator=gumbel",
        "estimator.tau_min=0.5",
        "estimator.anneal_rate=0.02",
        "estimator.anneal_every=10",
        "steps=30",
        "probe.every=0",
        "probe.draws=4",
    )
    assert run(config, tmp_path)["status"] == "ok"
    with open(tmp_path / "metrics.csv") as handle:
        recorded = {
            int(row["step"]): float(row["value"]) for row in csv.DictReader(handle) if row["metric"] == "tau"
        }
    assert recorded == pytest.approx({1: 1.0, 10: math.exp(-0.2), 20: math.exp(-0.4), 30: math.exp(-0.6)})
