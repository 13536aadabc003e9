"""The probe's statistics as a statistician reads them: a calibrated test of zero bias, effect sizes that do
not depend on M or the architecture, and cosine and SNR debiased for the probe's noise.

Tolerances come from the standard error: over 1000 probes of an unbiased estimator the fraction of
``grad_bias_p < 0.05`` is a binomial proportion with SE √(0.05·0.95/1000) ≈ 0.0069, and [0.02, 0.08] is
±4.3 SE around the nominal 0.05.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from bench.run.build import setup
from bench.run.probe import draw_gradients_vectorized, flatten, gradient_statistics, probe
from bench.run.probe.draws import deterministic_gradient, probe_targets
from bench.tasks.gaussian import GaussianTask
from bench.tasks.toy import Toy
from estimators import Reparam, ScoreFunction, StraightThrough

PROBES, DRAWS = 1000, 256


def toy_at_random_point(generator: torch.Generator, dim: int = 3) -> Toy:
    """The toy task with p(b = 1) of each of its ``dim`` variables uniform in [0.1, 0.9]."""
    task = Toy(dim=dim)
    p = 0.1 + 0.8 * torch.rand(dim, generator=generator)
    with torch.no_grad():
        task.logits[:, 1] = torch.log(p / (1 - p))
    return task


def gaussian_at_random_point(generator: torch.Generator) -> GaussianTask:
    task = GaussianTask(dim=3)
    with torch.no_grad():
        task.mean.copy_(torch.randn(3, generator=generator))
        task.log_scale.copy_(0.5 * torch.randn(3, generator=generator))
    return task


def p_values(make_task, estimator, samples: int, probes: int = PROBES) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    values = []
    for _ in range(probes):
        task = make_task(generator)
        gradients = draw_gradients_vectorized(task, estimator, samples, None, DRAWS)
        values.append(gradient_statistics(gradients, flatten(task.reference_gradient(None)))["grad_bias_p"])
    return torch.tensor(values)


def warmed_ema_baseline() -> ScoreFunction:
    """The EMA baseline as training leaves it: it has seen many values of f (about 0.25 on the toy task)."""
    estimator = ScoreFunction(baseline="ema")
    estimator.ema_value.fill_(0.25 * (1 - estimator.decay**100))
    estimator.ema_updates.fill_(100)
    return estimator


@pytest.mark.parametrize(
    ("name", "make_task", "estimator", "samples"),
    [
        ("toy/rloo", toy_at_random_point, lambda: ScoreFunction(baseline="loo"), 2),
        ("toy/score_function(ema)", toy_at_random_point, warmed_ema_baseline, 1),
        ("gaussian/reparam", gaussian_at_random_point, Reparam, 1),
    ],
)
def test_the_bias_test_is_calibrated_for_unbiased_estimators(name, make_task, estimator, samples, one_thread):
    model_estimator = estimator().eval()  # probes read the baseline, never update it
    if name == "toy/score_function(ema)":
        assert float(model_estimator.baseline_for(torch.zeros(1))) == pytest.approx(0.25)
    rejected = float((p_values(make_task, model_estimator, samples) < 0.05).float().mean())
    assert 0.02 <= rejected <= 0.08, (name, rejected)


def test_the_bias_test_rejects_a_biased_estimator(one_thread):
    # Negative control: straight-through on the toy task is biased away from p = 0.5.
    rejected = float((p_values(toy_at_random_point, StraightThrough(), 1, probes=100) < 0.05).float().mean())
    assert rejected > 0.9, rejected


def test_with_one_coordinate_the_bias_test_is_the_t_test():
    generator = torch.Generator().manual_seed(1)
    draws = (0.3 + torch.randn(40, 1, generator=generator, dtype=torch.float64)).float()
    expected = stats.ttest_1samp(draws[:, 0].double().numpy(), 0.2).pvalue
    found = gradient_statistics(draws, torch.tensor([0.2]))["grad_bias_p"]
    assert found == pytest.approx(expected, rel=1e-6)


def test_statistics_match_a_float64_transcription_of_their_definitions():
    generator = torch.Generator().manual_seed(2)
    draws, reference_draws = 64, 96
    gradients = torch.randn(draws, 5, generator=generator) + torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    reference = torch.tensor([0.9, -2.1, 0.4, 0.1, 3.2])
    deterministic = torch.tensor([0.5, 0.5, -0.5, 0.0, 1.0])
    references = reference + 0.5 * torch.randn(reference_draws, 5, generator=generator)
    for exact in (True, False):
        found = gradient_statistics(
            gradients,
            reference if exact else None,
            deterministic,
            reference_draws=None if exact else references,
        )
        g = gradients.double()
        mean = g.mean(0)
        variance = float(((g - mean) ** 2).sum() / (draws - 1))
        target = reference.double() if exact else references.double().mean(0)
        reference_noise = (
            0.0
            if exact
            else float(((references.double() - target) ** 2).sum())
            / ((reference_draws - 1) * reference_draws)
        )
        estimated, truth = mean - deterministic.double(), target - deterministic.double()
        signal = float(estimated @ estimated) - variance / draws
        truth_sq = float(truth @ truth) - reference_noise
        bias_sq = float((mean - target) @ (mean - target)) - variance / draws - reference_noise
        expected = {
            "grad_variance": variance,
            "grad_bias": float((mean - target).norm()),
            "grad_bias_se": math.sqrt(variance / draws + reference_noise),
            "grad_bias_sq": bias_sq,
            "grad_mse": float(((g - target) ** 2).sum(1).mean()) - reference_noise,
            "grad_cos": max(-1.0, min(1.0, float(estimated @ truth) / math.sqrt(truth_sq * signal))),
            "grad_snr": signal / variance,
            "grad_bias_rel": bias_sq / truth_sq,
            "grad_variance_rel": variance / truth_sq,
        }
        for key, value in expected.items():
            assert found[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (exact, key)
        assert 0 <= found["grad_bias_p"] <= 1


def test_fields_that_do_not_exist_are_null():
    constant = torch.ones(16, 3)  # every draw equal (the exact estimator): no variance to test against
    found = gradient_statistics(constant, torch.tensor([1.0, 1.0, 1.5]))
    assert math.isnan(found["grad_bias_p"]) and found["grad_variance"] == 0
    noisy = torch.randn(16, 3, generator=torch.Generator().manual_seed(3))
    found = gradient_statistics(noisy, None)
    assert all(math.isnan(found[key]) for key in ("grad_bias", "grad_bias_p", "grad_cos", "grad_bias_rel"))
    found = gradient_statistics(noisy * 0.01, torch.zeros(3))  # ‖g*‖ = 0: no relative size, no direction
    assert math.isnan(found["grad_bias_rel"]) and math.isnan(found["grad_cos"])
    assert not math.isnan(found["grad_bias_p"])


@pytest.fixture(scope="module")
def vae_at_step_zero():
    """Per seed 0–4, the VAE at its initial parameters (the same for every estimator of a seed)."""
    from tests.helpers import make_config

    def build(estimator: str, seed: int):
        config = make_config("task=vae", f"estimator={estimator}", "samples=2", f"seed={seed}")
        torch.manual_seed(seed)
        return setup(config)[:2]

    return build


@pytest.mark.parametrize("estimator", ["rloo", "reinmax", "st", "gumbel_st", "gumbel"])
def test_biased_estimators_fail_and_rloo_passes_the_bias_test_on_the_vae(estimator, vae_at_step_zero):
    for seed in range(5):
        task, model_estimator = vae_at_step_zero(estimator, seed)
        torch.manual_seed(1000 + seed)
        p = probe(task, model_estimator, 2, DRAWS)["grad_bias_p"]
        if estimator == "rloo":
            assert p > 1e-3, (seed, p)
        else:
            assert p < 1e-6, (estimator, seed, p)


def test_debiased_cosine_of_an_unbiased_estimator_is_one(vae_at_step_zero):
    # rloo is unbiased, so its true cosine is 1. The raw cosine of a mean of M = 16 draws is pulled down by
    # the draws' noise (negative control); the debiased one is not.
    task, estimator = vae_at_step_zero("rloo", 0)
    batch = task.probe_batch()
    targets = probe_targets(task, batch)
    reference = flatten(task.reference_gradient(batch))
    deterministic = deterministic_gradient(task, batch, targets)
    torch.manual_seed(7)
    draws = draw_gradients_vectorized(task, estimator, 2, batch, 200 * 16).reshape(200, 16, -1)
    debiased, raw = [], []
    truth = (reference - deterministic).double()
    for sample in draws:
        debiased.append(gradient_statistics(sample, reference, deterministic)["grad_cos"])
        mean = sample.double().mean(0) - deterministic.double()
        raw.append(float(mean @ truth / (mean.norm() * truth.norm())))
    assert abs(float(torch.tensor(debiased).nanmedian()) - 1) <= 0.02
    assert float(torch.tensor(raw).median()) < 0.95


def test_probe_with_respect_to_the_distribution(vae_at_step_zero):
    # probe.wrt=distribution: the gradient with respect to the encoder's output logits (32 images × 4
    # variables × 8 classes), whatever the encoder's size; an exact reference by enumeration.
    task, estimator = vae_at_step_zero("st", 0)
    torch.manual_seed(0)
    found = probe(task, estimator, 2, 64, wrt="distribution")
    assert found["grad_bias_p"] < 1e-6 and 0 < found["grad_bias_rel"] < 1
    rloo, unbiased = vae_at_step_zero("rloo", 0)
    found = probe(rloo, unbiased, 2, 64, wrt="distribution")
    assert found["grad_bias_p"] > 1e-3
    targets = probe_targets(rloo, rloo.probe_batch(), "distribution")
    assert [tuple(tensor.shape) for tensor in targets.tensors] == [(32, 4, 8)]


def test_rare_events_do_not_make_the_bias_test_reject_an_unbiased_estimator():
    # A score-function-type estimator at a peaked distribution: a draw is non-zero only when a rare event
    # happens (rate 0.02: about 5 of 256 draws), so a handful of draws carry all the variance. The t-test's
    # normal reference is then badly liberal in its tail (the negative control: ~3% of unbiased probes below
    # p = 1e-3); the degrees of freedom taken from the draws' fourth moment keep the tail near nominal.
    # 2000 probes: the nominal count below 1e-3 is 2, and 0.002 allows for 4 (binomial SE ≈ 0.0007).
    rate, draws = 0.02, 256
    events = (torch.rand(2000, draws, generator=torch.Generator().manual_seed(4)) < rate).double()
    events = events[events.var(1) > 0]
    t = (events.mean(1) - rate) / (events.std(1) / math.sqrt(draws))
    plain = torch.from_numpy(2 * stats.t.sf(t.abs().numpy(), draws - 1))
    assert float((plain < 1e-3).float().mean()) > 0.01
    ours = torch.tensor(
        [
            gradient_statistics(torch.stack([row, -row], 1).float(), torch.tensor([rate, -rate]))[
                "grad_bias_p"
            ]
            for row in events
        ]
    )
    assert float((ours < 1e-3).float().mean()) <= 0.002
