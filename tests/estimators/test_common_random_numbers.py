"""Common random numbers: estimators given the same pre-drawn noise (``estimators.base.draw_noise``) use the
same random numbers where they sample alike, in a plain call, in the per-draw loop and under ``vmap``."""

from __future__ import annotations

import pytest
import torch

from bench.run.probe.draws import draw_gradients, draw_gradients_vectorized
from bench.tasks.toy import Toy
from estimators import (
    DisARM,
    Gaussian,
    Gumbel,
    GumbelRao,
    GumbelST,
    MeasureValued,
    ReinMax,
    Reparam,
    ScoreFunction,
    StraightThrough,
)
from estimators.base import EstimatorError, draw_noise, sample_categorical, take_samples

CATEGORICAL = {
    "score_function": lambda: ScoreFunction(),
    "rloo": lambda: ScoreFunction(baseline="loo"),
    "st": lambda: StraightThrough(tau=0.5),
    "reinmax": lambda: ReinMax(tau=1.5),
    "gumbel_st": lambda: GumbelST(tau=0.3),
    "gumbel_rao": lambda: GumbelRao(tau=0.7),
}


def classes_seen(estimator, logits, noise, samples=3):
    """The classes f is evaluated at (argmax of what it receives), shape (S, *logits.shape[:-1])."""
    seen = []

    def f(z):
        seen.append(z.detach().argmax(-1))
        return (z * torch.arange(z.shape[-1], dtype=z.dtype)).sum((-1, -2))

    estimator(logits.requires_grad_(True), f, samples, noise=noise)
    return seen[0]


@pytest.mark.usefixtures("one_thread")
def test_every_gumbel_max_estimator_sees_the_same_classes_and_gumbel_the_same_perturbation():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, 6)
    noise = draw_noise(logits, 3, generator=torch.Generator().manual_seed(1))
    expected = sample_categorical(logits, 3, noise).argmax(-1)
    for name, make in CATEGORICAL.items():
        assert torch.equal(classes_seen(make(), logits.clone(), noise), expected), name
    # The relaxed Gumbel-Softmax sample is softmax((θ + g)/τ) with the same g: its argmax is the same class.
    assert torch.equal(classes_seen(Gumbel(tau=0.5), logits.clone(), noise), expected)
    # Other noise, other classes: the classes come from the noise, not from the global generator.
    other = draw_noise(logits, 3, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(classes_seen(StraightThrough(), logits.clone(), other), expected)


def test_given_noise_makes_an_estimate_deterministic_whatever_the_global_generator():
    logits = torch.randn(4, 3)
    noise = draw_noise(logits, 2, generator=torch.Generator().manual_seed(3))

    def estimate(seed):
        torch.manual_seed(seed)
        values = logits.clone().requires_grad_(True)
        ScoreFunction(baseline="loo")(
            values, lambda z: (z[..., 0] - 0.3).pow(2).sum(-1), 2, noise=noise
        ).sum().backward()
        return values.grad

    assert torch.equal(estimate(0), estimate(1))


def test_fewer_samples_read_the_first_rows_of_the_noise():
    logits = torch.randn(7, 5)
    noise = draw_noise(logits, 4, generator=torch.Generator().manual_seed(4))
    four = sample_categorical(logits, 4, noise).argmax(-1)
    two = sample_categorical(logits, 2, take_samples(noise, 2)).argmax(-1)
    assert torch.equal(four[:2], two)
    batched = draw_noise(logits, 4, draws=3, generator=torch.Generator().manual_seed(4))
    assert take_samples(batched, 2, leading=1)["uniform"].shape == (3, 2, 7, 5)
    assert take_samples(batched, 2, leading=1)["antithetic"].shape == (3, 1, 7)


def test_antithetic_and_gaussian_streams_are_shared_by_the_estimators_that_read_them():
    bits = torch.zeros(6, 2)
    noise = draw_noise(bits, 2, generator=torch.Generator().manual_seed(5))
    first, second = [], []
    for record in (first, second):
        DisARM()(
            bits.clone().requires_grad_(True),
            lambda z, record=record: record.append(z) or z[..., 1].sum(-1),
            2,
            noise=noise,
        )
    assert torch.equal(first[0], second[0])

    mean, log_scale = torch.zeros(3), torch.zeros(3)
    gaussian = Gaussian(mean, log_scale)
    normal = draw_noise(gaussian, 2, generator=torch.Generator().manual_seed(6))
    seen = {}
    for name, estimator in (
        ("reparam", Reparam()),
        ("score_function", ScoreFunction()),
        ("mvd", MeasureValued()),
    ):
        calls = []
        parameters = Gaussian(mean.clone().requires_grad_(True), log_scale.clone().requires_grad_(True))
        estimator(
            parameters, lambda z, calls=calls: calls.append(z.detach()) or z.pow(2).sum(-1), 2, noise=normal
        )
        seen[name] = calls[0]
    assert torch.allclose(seen["reparam"], seen["score_function"]) and torch.allclose(
        seen["reparam"], seen["mvd"]
    )


def test_a_noise_stream_of_the_wrong_shape_is_refused_with_the_fix():
    logits = torch.randn(4, 3)
    noise = draw_noise(logits, 2)
    with pytest.raises(EstimatorError, match="draw_noise"):
        StraightThrough()(logits, lambda z: z.sum((-1, -2)), 3, noise=noise)
    with pytest.raises(EstimatorError, match="no stream 'uniform'"):
        StraightThrough()(logits, lambda z: z.sum((-1, -2)), 2, noise={"normal": torch.zeros(2, 4)})


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", ["st", "reinmax", "gumbel_st", "rloo"])
def test_vectorized_draws_with_given_noise_equal_the_per_draw_loop_draw_by_draw(name):
    task = Toy(dim=3, classes=3, p0=0.3)
    draws = 64
    noise = draw_noise(task.logits.detach(), 2, draws=draws, generator=torch.Generator().manual_seed(7))
    estimator = CATEGORICAL[name]()
    vectorized = draw_gradients_vectorized(task, estimator, 2, None, draws, noise=noise)
    looped = draw_gradients(task, estimator, 2, None, draws, noise=noise)
    torch.testing.assert_close(vectorized, looped, rtol=1e-5, atol=1e-6)
    assert vectorized.std(0).sum() > 0  # the draws differ from one another: each reads its own noise
