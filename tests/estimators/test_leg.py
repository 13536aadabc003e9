"""Local expectation gradients (estimators.LocalExpectation): exact for a separable f, unbiased on the VAE
(the calibrated test of zero bias against the exact gradient), unbiased for f's own parameters, vectorized.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.run.probe import probe
from bench.run.probe.draws import draw_gradients, draw_gradients_vectorized
from bench.tasks.toy import Toy
from bench.tasks.vae import VAE
from estimators import Exact, LocalExpectation, StraightThrough


def toy_at_random_point(dim: int = 5, classes: int = 4) -> Toy:
    task = Toy(dim=dim, classes=classes)
    with torch.no_grad():
        task.logits.copy_(torch.randn(dim, classes, generator=torch.Generator().manual_seed(0)))
    return task


def test_for_a_separable_f_every_draw_is_the_exact_gradient(one_thread):
    # f(z) = Σ_d (z_d·v − t)² is a sum over the variables: every term f_j(z_j), j ≠ l, cancels in variable
    # l's local expectation, so each draw (sampled z or not) equals the exact gradient up to rounding.
    task = toy_at_random_point()
    exact = task.reference_gradient()[0].reshape(-1)
    torch.manual_seed(1)
    looped = draw_gradients(task, LocalExpectation(), 3, None, 8)
    vectorized = draw_gradients_vectorized(task, LocalExpectation(), 1, None, 64)
    for draws in (looped, vectorized):
        error = (draws - exact).norm(dim=1).max() / exact.norm()
        assert float(error) < 1e-5, float(error)


def test_f_evaluations_count_one_evaluation_per_sample_and_c_minus_one_per_variable():
    task = toy_at_random_point(dim=5, classes=4)
    f = task.objective()
    assert LocalExpectation().f_evaluations(task.logits, f, 3) == 3 * (1 + 5 * 3)
    torch.manual_seed(2)
    vae = VAE(hidden=8, probe_size=4)
    batch = vae.probe_batch()
    # per data point: L = 4 coupled variables of C = 8 classes
    assert LocalExpectation().f_evaluations(vae.distribution(batch), vae.objective(batch), 2) == 2 * 29
    counted = []

    def counting(z: torch.Tensor) -> torch.Tensor:
        counted.append(z.shape[0])
        return f(z)

    LocalExpectation()(task.logits, counting, 3)
    assert sum(counted) == 3 * (1 + 5 * 3)


def test_unbiased_on_the_vae_by_the_calibrated_bias_test(one_thread):
    # The 4×8 VAE at initialization (8 probe images), S = 2, M = 1000 draws with respect to the encoder's
    # output logits: the test of zero bias against the exact enumeration does not reject (p > 1e-3), while
    # straight-through, biased, is rejected by the same test at the same point (negative control).
    torch.manual_seed(3)
    task = VAE(probe_size=8)
    torch.manual_seed(4)
    found = probe(task, LocalExpectation(), 2, 1000, wrt="distribution")
    assert found["grad_bias_p"] > 1e-3, found
    assert probe(task, StraightThrough(), 2, 256, wrt="distribution")["grad_bias_p"] < 1e-6


def test_the_parameters_of_f_get_an_unbiased_gradient(one_thread):
    # f(z) = Σ_d (z_d·v − w_d)² with its own parameter w: the pathwise ∇_w f(z) at the samples is unbiased.
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 4, generator=generator).requires_grad_()
    values = torch.linspace(0, 1, 4)
    w = nn.Parameter(torch.tensor([0.2, 0.5, 0.9]))

    def f(z: torch.Tensor) -> torch.Tensor:
        return ((z @ values - w) ** 2).sum(-1)

    exact = torch.cat([g.reshape(-1) for g in torch.autograd.grad(Exact()(logits, f, 1), [logits, w])])
    torch.manual_seed(6)
    draws = torch.stack(
        [
            torch.cat(
                [g.reshape(-1) for g in torch.autograd.grad(LocalExpectation()(logits, f, 1), [logits, w])]
            )
            for _ in range(400)
        ]
    )
    error = (draws.mean(0) - exact).abs()
    standard_error = draws.std(0) / math.sqrt(len(draws))
    # logits: exact in every draw (f is separable); w: within 4.5 standard errors (3 coordinates)
    assert float(error[:12].max()) < 1e-5 * float(exact[:12].norm())
    assert bool((error[12:] < 4.5 * standard_error[12:]).all()), (error[12:], standard_error[12:])


def test_finite_for_extreme_logits_and_many_classes():
    # As tests/estimators/test_properties.py asks of every estimator: logits up to ±1e3, up to 1000 classes,
    # with a parameter of f's own, float32 and float64.
    generator = torch.Generator().manual_seed(7)
    cases = [(2, 1e3, torch.float32), (1000, 1e3, torch.float64), (7, 0.0, torch.float32)]
    for classes, scale, dtype in cases:
        logits = (scale * torch.randn(3, 2, classes, generator=generator)).to(dtype).requires_grad_()
        weight = nn.Parameter(torch.ones(classes, dtype=dtype))

        def f(z: torch.Tensor, weight: torch.Tensor = weight) -> torch.Tensor:
            return ((z * weight).sum(-1) - 0.3).pow(2).sum(-1)  # (S, 3): couples the 2 variables of a row

        surrogate = LocalExpectation()(logits, f, 2)
        gradients = torch.autograd.grad(surrogate.sum(), [logits, weight])
        assert surrogate.shape == (3,) and bool(torch.isfinite(surrogate).all())
        assert all(bool(torch.isfinite(gradient).all()) for gradient in gradients)
