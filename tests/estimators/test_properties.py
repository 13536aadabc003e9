"""Property-based tests (hypothesis): every estimator returns finite values and finite gradients on extreme
inputs.

Categorical estimators get logits of magnitude up to 1e3 in several patterns (spread, one class far above
the rest, all equal, random signs), C from 2 to 1000 classes, temperatures from 1e-3 to 1e3 (ReinMax from
its lower bound 1), float32 and float64. Gaussian estimators get means up to ±1e3 and log-scales from -50
to 10 (σ from 2e-22 to 2e4). The objective f has a parameter of its own, so the pathwise part of the
gradient (into a decoder) is checked too. Derandomized, so that a failure is reproducible.

Out of range by nature, not tested: log σ below about -87 in float32, where σ underflows to 0 and the
score-function and measure-valued gradients (∝ 1/σ, Mohamed et al. 2020, Table 1) are not representable.
(Computing log-softmax as log(softmax) instead of log_softmax, for one, fails these properties.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from estimators import (
    RODEO,
    DisARM,
    Exact,
    Gaussian,
    Gumbel,
    GumbelRao,
    GumbelST,
    MeasureValued,
    ReinMax,
    ReinMaxCV,
    ReinMaxRao,
    Reparam,
    ScoreFunction,
    StraightThrough,
)

BOUNDED = settings(max_examples=40, deadline=None, derandomize=True, database=None)
TEMPERATURES = st.sampled_from([1e-3, 1e-2, 0.5, 1.0, 10.0, 1e3]) | st.floats(-3, 3).map(lambda e: 10.0**e)

# name -> (constructor from τ, smallest sample count, sample counts must be even, only two classes)
CATEGORICAL: dict[str, tuple[Callable[[float], torch.nn.Module], int, bool, bool]] = {
    "score_function": (lambda tau: ScoreFunction(), 1, False, False),
    "rloo": (lambda tau: ScoreFunction(baseline="loo"), 2, False, False),
    "score_function_ema": (lambda tau: ScoreFunction(baseline="ema"), 1, False, False),
    "gumbel": (lambda tau: Gumbel(tau=tau), 1, False, False),
    "gumbel_st": (lambda tau: GumbelST(tau=tau), 1, False, False),
    "st": (lambda tau: StraightThrough(tau=tau), 1, False, False),
    "reinmax": (lambda tau: ReinMax(tau=max(tau, 1.0)), 1, False, False),  # ReinMax needs τ >= 1
    "reinmax_rao": (lambda tau: ReinMaxRao(draws=2, tau=tau), 1, False, False),
    "reinmax_cv": (lambda tau: ReinMaxCV(draws=2, tau=max(tau, 1.0), tau2=tau), 1, False, False),
    "rodeo": (lambda tau: RODEO(), 2, False, True),
    "gumbel_rao": (lambda tau: GumbelRao(draws=4, tau=tau), 1, False, False),
    "exact": (lambda tau: Exact(), 1, False, False),
    "disarm": (lambda tau: DisARM(), 2, True, True),
}
GAUSSIAN: dict[str, Callable[[], torch.nn.Module]] = {
    "reparam": Reparam,
    "score_function": ScoreFunction,
    "rloo": lambda: ScoreFunction(baseline="loo"),
    "measure_valued": MeasureValued,
    "measure_valued_uncoupled": lambda: MeasureValued(coupling=False),
}


def finite(tensor: torch.Tensor | None) -> bool:
    return tensor is not None and bool(torch.isfinite(tensor).all())


@st.composite
def logits_cases(draw, two_classes: bool):
    classes = 2 if two_classes else draw(st.sampled_from([2, 3, 10, 1000]))
    batch = draw(st.integers(1, 3))
    magnitude = draw(st.sampled_from([1.0, 50.0, 1e3]))
    pattern = draw(st.sampled_from(["spread", "peaked", "equal", "signs"]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    shape = (batch, classes)
    if pattern == "spread":  # uniform in [−m, m]
        logits = magnitude * (2 * torch.rand(shape, generator=generator, dtype=dtype) - 1)
    elif pattern == "peaked":  # one class at +m, the others at −m: probabilities e^(−2m) underflow
        logits = torch.full(shape, -magnitude, dtype=dtype)
        logits[:, torch.randint(classes, (1,), generator=generator)] = magnitude
    elif pattern == "equal":
        logits = torch.full(shape, magnitude, dtype=dtype)
    else:  # ±m at random
        logits = magnitude * torch.randint(0, 2, shape, generator=generator).to(dtype).mul(2).sub(1)
    target = torch.rand(classes, generator=generator, dtype=dtype)
    return logits, target, draw(TEMPERATURES), draw(st.sampled_from([1, 2, 4]))


@pytest.mark.parametrize("name", sorted(CATEGORICAL))
def test_categorical_estimators_stay_finite_on_extreme_inputs(name):
    build, least, even, two_classes = CATEGORICAL[name]

    @BOUNDED
    @given(case=logits_cases(two_classes))
    def check(case):
        logits, target, tau, samples = case
        samples = max(samples, least)
        samples += samples % 2 if even else 0
        logits = logits.clone().requires_grad_(True)
        weight = torch.ones_like(target, requires_grad=True)  # a parameter of f: the pathwise gradient

        def f(z: torch.Tensor) -> torch.Tensor:
            return ((weight * z - target) ** 2).sum(-1)

        estimator = build(tau)
        surrogate = estimator(logits, f, samples)
        assert finite(surrogate), (name, surrogate)
        surrogate.sum().backward()
        assert finite(logits.grad), (name, logits.grad)
        assert finite(weight.grad), (name, weight.grad)

    check()


@st.composite
def gaussian_cases(draw):
    batch, dim = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    center = draw(st.sampled_from([0.0, 1.0, 50.0, -1e3, 1e3]))
    log_scale = draw(st.sampled_from([-50.0, -10.0, 0.0, 5.0, 10.0]) | st.floats(-50, 10))
    mean = center + torch.randn((batch, dim), generator=generator, dtype=dtype)
    log_scales = log_scale + 0.1 * torch.randn((batch, dim), generator=generator, dtype=dtype)
    shape = draw(st.sampled_from(["square", "cos"]))
    return mean, log_scales, shape, draw(st.sampled_from([1, 2, 4]))


@pytest.mark.parametrize("name", sorted(GAUSSIAN))
def test_gaussian_estimators_stay_finite_on_extreme_inputs(name):
    @BOUNDED
    @given(case=gaussian_cases())
    def check(case):
        mean, log_scale, shape, samples = case
        samples = max(samples, 2) if name == "rloo" else samples
        mean = mean.clone().requires_grad_(True)
        log_scale = log_scale.clone().requires_grad_(True)
        k = torch.tensor(1.0, dtype=mean.dtype, requires_grad=True)  # a parameter of f

        def f(z: torch.Tensor) -> torch.Tensor:
            values = (z - k) ** 2 if shape == "square" else torch.cos(k * z)
            return values.sum(-1)

        surrogate = GAUSSIAN[name]()(Gaussian(mean, log_scale), f, samples)
        assert finite(surrogate), (name, surrogate)
        surrogate.sum().backward()
        for gradient in (mean.grad, log_scale.grad, k.grad):
            assert finite(gradient), (name, gradient)

    check()


def test_the_extremes_are_reached():
    """The strategies do produce the extreme inputs the properties claim to cover (not only mild ones)."""
    seen = {"classes": set(), "magnitude": 0.0, "tau": set()}

    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @given(case=logits_cases(False))
    def collect(case):
        logits, _, tau, _ = case
        seen["classes"].add(logits.shape[-1])
        seen["magnitude"] = max(seen["magnitude"], float(logits.abs().max()))
        seen["tau"].add(tau)

    collect()
    assert {2, 1000} <= seen["classes"] and math.isclose(seen["magnitude"], 1e3)
    assert min(seen["tau"]) <= 1e-3 * 1.0001 and max(seen["tau"]) >= 1e3 * 0.9999
