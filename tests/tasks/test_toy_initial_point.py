"""The toy task's seeded initial point: ``init_noise`` gives each seed its own initial logits (so a
deterministic trajectory, such as exact training, differs between seeds), and at 0 draws nothing."""

from __future__ import annotations

import math

import pytest
import torch

from bench.formats.errors import ConfigError
from bench.tasks.toy import Toy


def logits(seed: int, **arguments) -> torch.Tensor:
    torch.manual_seed(seed)  # what the runner does before it builds the task
    return Toy(**arguments).logits.detach().clone()


def test_without_noise_every_seed_starts_at_p0_and_the_generator_is_untouched():
    first, second = logits(0, p0=0.3), logits(1, p0=0.3)
    assert torch.equal(first, second)
    assert float(first.softmax(-1)[0, 1]) == pytest.approx(0.3)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    Toy(p0=0.3)
    assert torch.equal(torch.rand(3), expected)  # building the task drew nothing


def test_with_noise_each_seed_starts_elsewhere_reproducibly_with_the_stated_spread():
    assert torch.equal(logits(3, p0=0.3, init_noise=0.3), logits(3, p0=0.3, init_noise=0.3))
    assert not torch.equal(logits(3, p0=0.3, init_noise=0.3), logits(4, p0=0.3, init_noise=0.3))
    # The logit gap of a Bernoulli is logit(p0) + the difference of two N(0, 0.3²): sd 0.3·√2 over seeds.
    # Over 400 seeds the sample sd has standard error ≈ sd / √(2·399) = 0.015; 4 of them is the tolerance.
    starts = [logits(seed, p0=0.3, init_noise=0.3) for seed in range(400)]
    gaps = torch.stack([start[0, 1] - start[0, 0] for start in starts])
    expected = 0.3 * math.sqrt(2)
    assert float(gaps.std()) == pytest.approx(expected, abs=4 * expected / math.sqrt(2 * 399))
    assert float(gaps.mean()) == pytest.approx(math.log(0.3 / 0.7), abs=4 * expected / math.sqrt(400))


def test_the_toy_gradient_study_gives_each_seed_its_own_trajectory():
    from tests.helpers import make_config

    assert make_config("+experiment=toy_gradient_study").task.init_noise > 0


def test_a_negative_init_noise_is_refused():
    with pytest.raises(ConfigError, match=r"task.init_noise must be a number >= 0, got task.init_noise=-1.0"):
        Toy(init_noise=-1.0)
