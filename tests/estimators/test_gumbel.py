"""Facts about Gumbel noise that every Gumbel-based estimator relies on (docs/design.md, "Estimators")."""

import math

import torch
from scipy import stats

from estimators.base import gumbel_noise, sample_categorical
from estimators.gumbel import relaxed_sample


def test_gumbel_max_has_the_softmax_distribution():
    # argmax(logits + g) ~ Cat(softmax(logits)) (Gumbel-max trick). Pearson chi-square on 200,000 draws over
    # 5 classes at a fixed seed; we reject only at p < 1e-4 (the statistic's 99.99% quantile, df = 4).
    torch.manual_seed(0)
    logits = torch.tensor([1.5, -0.3, 0.0, 2.0, -1.0])
    draws = 200_000
    counts = sample_categorical(logits, draws).sum(0)
    expected = draws * logits.softmax(-1)
    statistic = float(((counts - expected) ** 2 / expected).sum())
    assert statistic < stats.chi2.ppf(1 - 1e-4, df=4), f"chi-square {statistic:.1f} with 4 degrees of freedom"
    assert counts.sum() == draws and set(torch.unique(sample_categorical(logits, 10)).tolist()) <= {0.0, 1.0}


def test_gumbel_noise_has_the_gumbel_mean_and_variance():
    # Standard Gumbel: mean = Euler–Mascheroni γ, variance π²/6. 400,000 draws, tolerance 4 standard errors.
    torch.manual_seed(1)
    draws = 400_000
    g = gumbel_noise((draws,), torch.zeros(()))
    variance = math.pi**2 / 6
    assert abs(float(g.mean()) - 0.5772156649) < 4 * math.sqrt(variance / draws)
    # The sample variance's standard error is sqrt((μ4 − σ⁴)/n), with μ4 = 27/5 σ⁴ (excess kurtosis 12/5).
    assert abs(float(g.var()) - variance) < 4 * math.sqrt((5.4 - 1) * variance**2 / draws)


def test_relaxed_samples_approach_one_hot_as_temperature_falls():
    # E[1 − max_k y_k] shrinks as τ → 0, and at τ = 0.01 almost every sample is one-hot to within 1e-2.
    torch.manual_seed(2)
    logits = torch.tensor([0.5, -0.2, 0.1, 0.0])
    draws = 20_000
    gaps = []
    for tau in (2.0, 1.0, 0.5, 0.1, 0.01):
        y = relaxed_sample(logits, draws, tau)
        assert torch.allclose(y.sum(-1), torch.ones(draws), atol=1e-5)
        gap = 1 - y.max(-1).values
        gaps.append((float(gap.mean()), float(gap.std() / math.sqrt(draws))))
    for (coarser, coarser_se), (finer, finer_se) in zip(gaps, gaps[1:], strict=False):
        assert finer < coarser - 4 * math.hypot(coarser_se, finer_se), gaps
    y = relaxed_sample(logits, draws, 0.01)
    near_one_hot = float((y.max(-1).values > 0.99).float().mean())
    # Binomial standard error at 20,000 draws is below 0.0016: 0.95 is over 25 standard errors below
    # what we see.
    assert near_one_hot > 0.95, near_one_hot


def test_the_fast_softmax_equals_torchs_up_to_rounding():
    # estimators.base.softmax moves a short class dimension to the front on the CPU: the same function, so
    # values and gradients equal torch's softmax to float rounding (rtol 1e-6 float32, 1e-12 float64; the
    # gradient y·(w − Σ y w) summed in another order differs by a few eps·max|w|, |w| ≲ 4 here), for
    # C below and above the SIMD width, large logits (no overflow), and -inf logits (a masked class gets
    # probability 0, the row stays finite). Under torch.func.vmap: tests/run/test_vectorized_probe.py.
    from estimators.base import simd_floats, softmax

    generator = torch.Generator().manual_seed(3)
    for dtype, rtol in ((torch.float32, 1e-6), (torch.float64, 1e-12)):
        for classes in (2, 3, 8, simd_floats() - 1, simd_floats(), 33):
            values = (30 * torch.randn(6, 5, 4, classes, generator=generator, dtype=dtype)).requires_grad_()
            weights = torch.randn(values.shape, generator=generator, dtype=dtype)
            ours, theirs = softmax(values), values.softmax(-1)
            assert torch.allclose(ours, theirs, rtol=rtol, atol=rtol * 1e-3), (dtype, classes)
            for dim in (0, 1, -2):
                assert torch.allclose(softmax(values, dim), values.softmax(dim), rtol=rtol, atol=0), dim
            (gradient,) = torch.autograd.grad((ours * weights).sum(), values)
            (expected,) = torch.autograd.grad((theirs * weights).sum(), values)
            assert torch.allclose(gradient, expected, rtol=rtol * 10, atol=rtol), (dtype, classes)
    masked = torch.tensor([[0.0, -math.inf, 1.0], [2.0, 2.0, -math.inf]])
    assert torch.equal(softmax(masked) == 0, masked.softmax(-1) == 0)
    assert torch.allclose(softmax(masked), masked.softmax(-1), rtol=1e-6, atol=0)
    assert softmax(masked)[0, 1] == 0 and torch.isfinite(softmax(masked)).all()
    assert softmax(torch.zeros(5)).shape == (5,)  # one dimension: torch's own
