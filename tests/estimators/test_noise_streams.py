"""Noise streams declared by the estimators themselves: ``draw_noise`` composes the declarations, the streams
of the bundled estimators are the numbers they always were, and a new estimator's stream changes none of
them."""

from __future__ import annotations

import pytest
import torch

from estimators import Gaussian
from estimators.base import (
    ESTIMATOR_CLASSES,
    Estimator,
    EstimatorError,
    NoiseStream,
    declared_streams,
    draw_noise,
    noise_stream,
    take_samples,
)


def closed_list_noise(params, samples: int, draws: int | None, generator: torch.Generator) -> dict:
    """The streams as the closed list in ``estimators.base`` drew them before the estimators declared them:
    the same names, shapes and order of draws from one generator (the numbers the same-point studies
    recorded)."""
    leading = () if draws is None else (draws,)
    like = params.mean if isinstance(params, Gaussian) else params
    options = {"generator": generator, "dtype": like.dtype}

    def uniform(*shape):
        return torch.rand((*leading, *shape), **options)

    def normal(*shape):
        return torch.randn((*leading, *shape), **options)

    if isinstance(params, Gaussian):
        batch = torch.broadcast_shapes(params.mean.shape, params.log_scale.shape)
        return {
            "normal": normal(samples, *batch),
            "weibull": uniform(samples, *batch),
            "weibull_negative": uniform(samples, *batch),
            "maxwell": normal(3, samples, *batch),
            "sign": uniform(samples, *batch),
            "coupling": uniform(samples, *batch),
            "normal_negative": normal(samples, *batch),
        }
    return {
        "uniform": uniform(samples, *params.shape),
        "antithetic": uniform((samples + 1) // 2, *params.shape[:-1]),
    }


PARAMS = {
    "categorical": torch.zeros(3, 4, 5),
    "bernoulli": torch.zeros(7, 2, dtype=torch.float64),
    "gaussian": Gaussian(torch.zeros(3, 2), torch.zeros(2)),
}


@pytest.mark.parametrize("draws", [None, 4])
@pytest.mark.parametrize("samples", [1, 3])
@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_the_bundled_streams_are_bit_identical_to_the_closed_list(kind, samples, draws):
    params = PARAMS[kind]
    drawn = draw_noise(params, samples, draws, torch.Generator().manual_seed(11))
    expected = closed_list_noise(params, samples, draws, torch.Generator().manual_seed(11))
    assert list(drawn) == list(expected)  # the same streams, drawn in the same order
    for name, value in expected.items():
        assert torch.equal(drawn[name], value), name


def test_a_new_estimator_declares_its_own_stream_and_changes_no_other():
    class Triplets(Estimator):
        """A test estimator with noise of a kind no other estimator reads: three uniforms per variable."""

        latents = ("categorical",)
        noise_streams = (NoiseStream("triplets", "categorical", event=False, before=(3,)),)

        def forward(self, logits, f, samples=1, noise=None):
            shape = (3, samples, *logits.shape[:-1])
            return noise_stream(noise, "triplets", shape, logits).sum()

    try:
        logits = torch.zeros(4, 6)
        drawn = draw_noise(logits, 5, draws=2, generator=torch.Generator().manual_seed(3))
        expected = closed_list_noise(logits, 5, 2, torch.Generator().manual_seed(3))
        assert list(drawn) == [*expected, "triplets"]  # drawn after the others ...
        for name, value in expected.items():  # ... so that their numbers stay what they were
            assert torch.equal(drawn[name], value), name
        assert drawn["triplets"].shape == (2, 3, 5, 4)
        fewer = take_samples(drawn, 2, leading=1)  # the sample dimension comes after the declared (3,)
        assert fewer["triplets"].shape == (2, 3, 2, 4)
        assert torch.equal(fewer["triplets"], drawn["triplets"][:, :, :2])
        assert fewer["antithetic"].shape == (2, 1, 4)  # ⌈2/2⌉ pairs
        one = {name: value[0] for name, value in take_samples(drawn, 2, leading=1).items()}
        assert Triplets()(logits, None, 2, noise=one) == fewer["triplets"][0].sum()
    finally:
        ESTIMATOR_CLASSES.remove(Triplets)
    assert "triplets" not in declared_streams("categorical")


def test_a_stream_declared_twice_differently_is_refused():
    class Clash(Estimator):
        latents = ("categorical",)
        noise_streams = (NoiseStream("antithetic", "categorical"),)  # DisARM's has one number per pair

    try:
        with pytest.raises(EstimatorError, match="antithetic"):
            draw_noise(torch.zeros(2, 2), 2)
    finally:
        ESTIMATOR_CLASSES.remove(Clash)


def test_parameters_of_no_known_kind_are_refused():
    with pytest.raises(EstimatorError, match="draw_noise knows"):
        draw_noise(torch.tensor(1.0), 2)
