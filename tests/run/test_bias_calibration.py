"""The test of zero bias is calibrated where its old form was not: at large effective rank, at a trained point
where a score function's draws are heavy-tailed, and with a Monte-Carlo reference; and it has power against a
planted bias in 2000 parameters. ``scripts/bias_calibration.py`` measures these cases with 1000 probes each.

Each case draws K probes of M = 256 draws at a fixed seed (the draws of all K probes in one vectorized call,
split into probes: the draws are independent either way) and counts the probes with p < α. For a calibrated
test that count is Binomial(K, α); the assertion is that it lies inside the central 99.9% of that
distribution (``band``), so that a calibrated test fails one case in a thousand, and a test whose size is
off by the amounts the issue found (0.005 or 0.024 at α = 0.05, 7× in the far tail) fails. Negative controls
(the old test's ν cap, the F test without its heavy-tail guards) show that the cases can fail.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from bench.run.build import setup
from bench.run.probe import draw_gradients_vectorized, flatten, gradient_statistics
from bench.run.probe.draws import deterministic_gradient, probe_targets
from bench.run.probe.statistics import draw_moments
from estimators import ScoreFunction
from tests.helpers import make_config

DRAWS = 256
GAUSSIAN_POINT = (1.0862, -0.6626)  # task=gaussian samples=2 estimator=rloo seed=3 at step 300


def band(probes: int, level: float) -> tuple[int, int]:
    """The central 99.9% of Binomial(probes, level): the rejection counts of a calibrated test."""
    return int(stats.binom.ppf(0.0005, probes, level)), int(stats.binom.isf(0.0005, probes, level))


def assert_calibrated(p_values: torch.Tensor, name: str, levels=(0.05, 0.01)) -> None:
    for level in levels:
        count = int((p_values < level).sum())
        low, high = band(len(p_values), level)
        assert low <= count <= high, (name, level, count, (low, high), len(p_values))


def built(*overrides: str, seed: int = 0):
    config = make_config(*overrides, f"seed={seed}")
    torch.manual_seed(seed)
    task, estimator, _ = setup(config)
    return task, estimator.eval(), config.samples


def probe_p_values(
    task, estimator, samples: int, probes: int, chunk: int = 64, seed: int = 0
) -> torch.Tensor:
    """``probes`` p-values of the probe's statistics against the task's exact or analytic reference."""
    batch = task.probe_batch()
    targets = probe_targets(task, batch)
    reference = flatten(task.reference_gradient(batch))
    deterministic = deterministic_gradient(task, batch, targets)
    torch.manual_seed(seed)
    values = []
    for start in range(0, probes, chunk):
        size = min(chunk, probes - start)
        draws = draw_gradients_vectorized(task, estimator, samples, batch, size * DRAWS, targets=targets)
        for gradients in draws.reshape(size, DRAWS, -1):
            values.append(gradient_statistics(gradients, reference, deterministic)["grad_bias_p"])
    return torch.tensor(values)


@pytest.mark.parametrize(
    ("overrides", "probes"),
    [
        (("task=toy", "estimator=rloo"), 1000),
        (("task=toy", "task.p0=0.3", "estimator=score_function"), 1000),
        (("task=toy", "task.dim=8", "task.classes=4", "estimator=rloo"), 600),
        (("task=toy", "task.dim=8", "task.classes=4", "estimator=rebar"), 400),
    ],
    ids=["toy_p05_rloo", "toy_p03_score_function", "toy_8x4_rloo", "toy_8x4_rebar"],
)
def test_the_bias_test_is_calibrated_on_the_toys(overrides, probes, one_thread):
    task, estimator, samples = built(*overrides)
    assert_calibrated(probe_p_values(task, estimator, samples, probes), overrides)


def test_the_bias_test_is_calibrated_on_the_vae_at_large_effective_rank(one_thread):
    # rloo on the 4 × 8 VAE at step 0, with a smaller encoder (32 hidden units) and 8 probe images so that it
    # is quick: effective rank about 46 (70 at full size), where the old test, its ν capped by a plug-in
    # rank, rejected 0.5% of probes at α = 0.05. 160 probes: the band at 0.05 is [1, 19].
    task, estimator, samples = built("task=vae", "task.hidden=32", "task.probe_size=8", "estimator=rloo")
    p_values = probe_p_values(task, estimator, samples, 160, chunk=16)
    assert_calibrated(p_values, "vae/rloo")
    # Not conservative either: half the p-values of a calibrated test lie below 0.5 (band [59, 101]).
    assert band(160, 0.5)[0] <= int((p_values < 0.5).sum()) <= band(160, 0.5)[1]


def gaussian_draws(probes: int, estimator, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    task, _, _ = built("task=gaussian", "estimator=rloo", "samples=2")
    with torch.no_grad():
        task.mean.fill_(GAUSSIAN_POINT[0])
        task.log_scale.fill_(GAUSSIAN_POINT[1])
    draws = draw_gradients_vectorized(task, estimator, samples, None, probes * DRAWS)
    return draws.reshape(probes, DRAWS, -1), flatten(task.reference_gradient(None))


def plain_f_test(gradients: torch.Tensor, reference: torch.Tensor) -> float:
    """Negative control: the F test with its ν but none of the heavy-tail guards (ν₂ = ν(M − 1), no
    skewness correction)."""
    moments = draw_moments(gradients)
    noise = moments.variance / DRAWS
    statistic = float(((moments.mean - reference.double()) ** 2).sum()) / noise
    dof = min(max(noise**2 / (moments.trace_square / DRAWS**2), 1.0), float(gradients.shape[1]))
    return float(stats.f.sf(statistic, dof, dof * (DRAWS - 1)))


def test_the_bias_test_is_calibrated_for_heavy_tailed_draws_at_a_trained_point(one_thread):
    # rloo (S = 2) on the Gaussian task where training left σ small: along log σ the draws have skewness 8 and
    # kurtosis 113. 2000 probes; the plain F test rejects about 8% at 0.05 and 3% at 0.01 (outside the band).
    torch.manual_seed(11)
    draws, reference = gaussian_draws(2000, ScoreFunction(baseline="loo").eval(), 2)
    ours = torch.tensor([gradient_statistics(gradients, reference)["grad_bias_p"] for gradients in draws])
    assert_calibrated(ours, "gaussian/rloo")
    assert int((ours < 0.001).sum()) <= band(2000, 0.001)[1] + 4  # the far tail within 3× of nominal
    plain = torch.tensor([plain_f_test(gradients, reference) for gradients in draws])
    with pytest.raises(AssertionError):
        assert_calibrated(plain, "plain F")


def test_the_bias_test_is_calibrated_against_a_monte_carlo_reference(one_thread):
    # The two-sample form: the same heavy-tailed draws against the mean of 256 draws of rloo with S = 64.
    torch.manual_seed(12)
    rloo = ScoreFunction(baseline="loo").eval()
    draws, _ = gaussian_draws(600, rloo, 2)
    references, _ = gaussian_draws(600, rloo, 64)
    p_values = torch.tensor(
        [
            gradient_statistics(gradients, None, reference_draws=reference)["grad_bias_p"]
            for gradients, reference in zip(draws, references, strict=True)
        ]
    )
    assert_calibrated(p_values, "gaussian/rloo against a Monte-Carlo reference")


def planted_p_values(probes: int, bias_norm_sq: float, dimension: int = 2000, capped: bool = False):
    generator = torch.Generator().manual_seed(13)
    direction = torch.randn(dimension, generator=generator)
    bias = direction / direction.norm() * math.sqrt(bias_norm_sq)
    values = []
    for _ in range(probes):
        gradients = torch.randn(DRAWS, dimension, generator=generator) + bias
        if not capped:
            values.append(gradient_statistics(gradients, torch.zeros(dimension))["grad_bias_p"])
            continue
        # Negative control: ν capped by the plug-in rank of the M/2 pair differences, as the old test did.
        moments = draw_moments(gradients)
        differences = moments.differences.double()
        plug_in = float((differences**2).sum()) ** 2 / float(((differences @ differences.T) ** 2).sum())
        noise = moments.variance / DRAWS
        dof = min(noise**2 / (moments.trace_square / DRAWS**2), plug_in)
        statistic = float((moments.mean**2).sum()) / noise
        values.append(float(stats.f.sf(statistic, dof, dof * (DRAWS - 1))))
    return torch.tensor(values)


def test_the_bias_test_finds_a_planted_bias_in_2000_parameters(one_thread):
    # Σ = I in P = 2000 dimensions, M = 256, ‖b‖² = 0.1·tr Σ/M: about 0.9 of probes reject at 0.05 with the
    # true ν = 2000 (and so with ours); with ν capped at the plug-in rank (≤ 128), almost none do.
    dimension = 2000
    planted = planted_p_values(80, 0.1 * dimension / DRAWS)
    assert int((planted < 0.05).sum()) >= 48, planted  # power ≥ 0.6; P(fail) < 1e-6 at power 0.9
    assert_calibrated(planted_p_values(80, 0.0), "planted, no bias")
    capped = planted_p_values(40, 0.1 * dimension / DRAWS, capped=True)
    assert int((capped < 0.05).sum()) <= 8, capped
