"""The probe's statistics as a statistician reads them: a test of zero bias that rejects biased estimators and
not unbiased ones, effect sizes that do not depend on M or the architecture, and cosine and SNR debiased for
the probe's noise. The test's calibration over many probes (sizes inside 99.9% binomial bands, power against a
planted bias) is in ``test_bias_calibration.py``.
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
from estimators import ScoreFunction, StraightThrough

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


def test_the_bias_test_is_calibrated_for_score_function_with_an_ema_baseline(one_thread):
    # Each probe at a new random point of a three-variable toy, the baseline as training leaves it. 600
    # probes: a calibrated test's count below 0.05 lies in the central 99.9% of Binomial(600, 0.05).
    estimator = warmed_ema_baseline().eval()  # probes read the baseline, never update it
    assert float(estimator.baseline_for(torch.zeros(1))) == pytest.approx(0.25)
    found = p_values(toy_at_random_point, estimator, 1, probes=600)
    low, high = stats.binom.ppf(0.0005, 600, 0.05), stats.binom.isf(0.0005, 600, 0.05)
    assert low <= int((found < 0.05).sum()) <= high, int((found < 0.05).sum())


def test_the_bias_test_rejects_a_biased_estimator(one_thread):
    # Negative control: straight-through on the toy task is biased away from p = 0.5.
    rejected = float((p_values(toy_at_random_point, StraightThrough(), 1, probes=100) < 0.05).float().mean())
    assert rejected > 0.9, rejected


def test_with_one_coordinate_and_symmetric_draws_the_bias_test_is_the_t_test():
    # Draws symmetric about their mean: no skewness to correct, and the test is the two-sided t test.
    generator = torch.Generator().manual_seed(1)
    half = torch.randn(20, 1, generator=generator, dtype=torch.float64)
    draws = 0.3 + torch.cat([half, -half])
    expected = stats.ttest_1samp(draws[:, 0].numpy(), 0.2).pvalue
    found = gradient_statistics(draws, torch.tensor([0.2], dtype=torch.float64))["grad_bias_p"]
    assert found == pytest.approx(expected, rel=1e-9)


def test_with_one_coordinate_the_bias_test_is_halls_skewness_corrected_t_test():
    # Skewed draws (exponential): the t statistic transformed by Hall (1992), t + λt²/3 + λ²t³/27 + λ/6 with
    # λ = μ̂₃/(σ̂³√M), against the two-sided t distribution with ν₂ degrees of freedom: M − 1, or fewer from the
    # fourth moment (2M·σ̂⁴/(μ̂₄ − σ̂⁴), here about 16) where that is below half of it.
    generator = torch.Generator().manual_seed(1)
    draws = torch.empty(64, 1, dtype=torch.float64).exponential_(generator=generator)
    sample = draws[:, 0].numpy()
    t = (sample.mean() - 0.8) / (sample.std(ddof=1) / math.sqrt(64))
    skewness = ((sample - sample.mean()) ** 3).mean() / sample.var(ddof=1) ** 1.5 / math.sqrt(64)
    hall = t + skewness * t**2 / 3 + skewness**2 * t**3 / 27 + skewness / 6
    centred = sample - sample.mean()
    variance = centred.var(ddof=1)
    heavy = 2 * 64 * variance**2 / ((centred**4).mean() - variance**2)
    assert heavy < 63 / 2
    expected = 2 * stats.t.sf(abs(hall), heavy)
    found = gradient_statistics(draws, torch.tensor([0.8], dtype=torch.float64))["grad_bias_p"]
    assert found == pytest.approx(expected, rel=1e-9)
    assert found != pytest.approx(stats.ttest_1samp(sample, 0.8).pvalue, rel=0.05)  # it does correct


def transcribed_bias_p(gradients: torch.Tensor, reference: torch.Tensor) -> float:
    """The test of zero bias (exact reference) literally from its definition (module docstring of
    ``bench.run.probe.statistics``), in float64 with explicit sums over pairs."""
    g = gradients.double()
    m, dimension = g.shape
    mean = g.mean(0)
    centred = g - mean
    variance = float((centred**2).sum()) / (m - 1)
    d = g[0 : m - m % 2 : 2] - g[1 : m - m % 2 : 2]
    k = len(d)
    unbiased = sum(float(d[i] @ d[j]) ** 2 for i in range(k) for j in range(k) if i != j) / (k * (k - 1)) / 4
    trace = float((d**2).sum()) / (2 * k)
    dof = min(max(trace**2 / unbiased, 1.0), dimension)
    norms = (centred**2).sum(1)
    heavy = 2 * (variance / m) ** 2 / ((float((norms**2).mean()) - variance**2) / m / m**2)
    dof_denominator = heavy if heavy < dof * (m - 1) / 2 else dof * (m - 1)
    spread = (centred**2).sum(0) / (m - 1) / m
    skewness = (centred**3).mean(0) / m**2 / spread**1.5
    t = (mean - reference.double()) / spread.sqrt()
    share = spread**2 / (spread**2).sum()
    corrected = t + share * (t + skewness * t**2 / 3 + skewness**2 * t**3 / 27 + skewness / 6 - t)
    statistic = float((spread * corrected**2).sum()) / (variance / m)
    return float(stats.f.sf(statistic, dof, dof_denominator))


def test_statistics_match_a_float64_transcription_of_their_definitions():
    # Float64 draws are computed in float64 (rel 1e-9); float32 draws in float32, within its rounding.
    generator = torch.Generator().manual_seed(2)
    draws, reference_draws = 64, 96
    gradients = torch.randn(draws, 5, generator=generator, dtype=torch.float64)
    gradients = gradients + torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    gradients[:, 1] += gradients[:, 0] ** 2  # correlated and skewed coordinates
    reference = torch.tensor([0.9, -0.9, 0.4, 0.1, 3.2], dtype=torch.float64)
    deterministic = torch.tensor([0.5, 0.5, -0.5, 0.0, 1.0], dtype=torch.float64)
    references = reference + 0.5 * torch.randn(reference_draws, 5, generator=generator, dtype=torch.float64)
    for exact in (True, False):
        found = gradient_statistics(
            gradients,
            reference if exact else None,
            deterministic,
            reference_draws=None if exact else references,
        )
        single = gradient_statistics(
            gradients.float(),
            reference.float() if exact else None,
            deterministic.float(),
            reference_draws=None if exact else references.float(),
        )
        g = gradients
        mean = g.mean(0)
        variance = float(((g - mean) ** 2).sum() / (draws - 1))
        target = reference if exact else references.mean(0)
        reference_noise = (
            0.0
            if exact
            else float(((references - target) ** 2).sum()) / ((reference_draws - 1) * reference_draws)
        )
        estimated, truth = mean - deterministic, target - deterministic
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
        if exact:
            expected["grad_bias_p"] = transcribed_bias_p(gradients, reference)
        for key, value in expected.items():
            assert found[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (exact, key)
            # float32: about 1e-7 relative per operation; 1e-5 allows for the sums of 64 × 5 terms and the
            # differences (grad_bias_sq) and ratios built from them
            assert single[key] == pytest.approx(value, rel=1e-5, abs=1e-8), (exact, key)
        assert 0 <= found["grad_bias_p"] <= 1
        assert single["grad_bias_p"] == pytest.approx(found["grad_bias_p"], rel=1e-4)


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
