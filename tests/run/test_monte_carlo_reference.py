"""The Monte-Carlo reference (``reference: monte_carlo``): on the 4×8 VAE, where the exact gradient is known,
its bias numbers agree with the exact reference's within their standard errors; it draws from a stream of
its own; it is chosen by ``task.reference`` and recorded in the summary as what it is.

Standard error of grad_bias_sq = ‖ḡ − r̄‖² − V̂/M − V̂_R/N: ḡ − r̄ has mean b and covariance Σ_tot = Σ/M + Σ_R/N,
so Var ‖ḡ − r̄‖² = 2 tr(Σ_tot²) + 4 bᵀΣ_tot b (Gaussian), with tr Σ², tr Σ_R², tr ΣΣ_R from the draws (unbiased
estimators, ``bench.run.probe.statistics``) and bᵀΣb, bᵀΣ_R b from their spread
along b.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from bench.formats.contract import REFERENCE_FIELDS, summary_problems
from bench.formats.errors import ConfigError
from bench.run.probe import draw_gradients_vectorized, gradient_statistics, monte_carlo_reference, probe
from bench.run.probe.draws import deterministic_gradient, probe_targets
from bench.run.probe.statistics import draw_moments, flatten, trace_of_product
from bench.tasks.base import choose_reference
from bench.tasks.gaussian import GaussianTask
from bench.tasks.vae import VAE
from estimators import Exact, Gumbel, ReinMax, ScoreFunction, StraightThrough

DRAWS, REFERENCE_DRAWS, SEED = 256, 512, 1234


def exact_gradient(task: VAE, batch, targets) -> torch.Tensor:
    """The exact gradient of the loss with respect to the targets (enumerating the 4096 codes)."""
    with torch.enable_grad():
        params = targets.distribution(batch)
        loss = Exact()(params, task.objective(batch), 1).mean() + task.deterministic(params, batch)
        return flatten(torch.autograd.grad(loss, targets.tensors)).detach()


def spread_along(draws: torch.Tensor, direction: torch.Tensor) -> float:
    """Unbiased directionᵀ Σ direction from the rows of ``draws``."""
    projected = (draws.double() - draws.double().mean(0)) @ direction
    return float(projected @ projected) / (len(draws) - 1)


def bias_standard_error(gradients, reference_draws, bias, probe_noise: bool = True) -> float:
    """√(2 tr(Σ_tot²) + 4 bᵀΣ_tot b), Σ_tot = Σ/M + Σ_R/N (Σ_R/N alone without ``probe_noise``)."""
    m, n = len(gradients), len(reference_draws)
    probes, references = draw_moments(gradients), draw_moments(reference_draws)
    squares = references.trace_square / n**2
    along = spread_along(reference_draws, bias) / n
    if probe_noise:
        squares += probes.trace_square / m**2
        squares += 2 * trace_of_product(probes, references) / (m * n)
        along += spread_along(gradients, bias) / m
    return math.sqrt(max(2 * squares + 4 * along, 0.0))


def vae_with_both_references(reference_draws: int = REFERENCE_DRAWS, **settings):
    """The 4×8 VAE at initialization, its exact gradient and a Monte-Carlo reference (w.r.t. its logits)."""
    torch.manual_seed(0)
    task = VAE(reference="monte_carlo", reference_draws=reference_draws, **settings)
    batch = task.probe_batch()
    targets = probe_targets(task, batch, "distribution")
    reference = monte_carlo_reference(task, batch, targets, reference_draws, seed=SEED)
    return task, batch, targets, exact_gradient(task, batch, targets), reference


def test_bias_against_the_monte_carlo_reference_agrees_with_the_exact_one(one_thread):
    # Must show 1: S = 2, M = 256 at step 0; the same M draws of each estimator against both references.
    task, batch, targets, exact, reference = vae_with_both_references()
    assert reference.estimator == "leg" and reference.draws.shape[0] == REFERENCE_DRAWS
    assert reference.pilot_variances["leg"] < reference.pilot_variances["rloo"]  # at equal cost
    deterministic = deterministic_gradient(task, batch, targets)
    estimators = {
        "st": StraightThrough(),
        "gumbel": Gumbel(),
        "reinmax": ReinMax(),
        "rloo": ScoreFunction("loo"),
    }
    for name, estimator in estimators.items():
        torch.manual_seed(7)
        gradients = draw_gradients_vectorized(task, estimator, 2, batch, DRAWS, targets=targets)
        against_exact = gradient_statistics(gradients, exact, deterministic)
        against_draws = gradient_statistics(gradients, None, deterministic, reference_draws=reference.draws)
        bias = gradients.double().mean(0) - exact.double()
        error = bias_standard_error(gradients, reference.draws, bias if name != "rloo" else 0 * bias)
        assert against_draws["grad_bias_se"] > against_exact["grad_bias_se"]  # the reference's noise counts
        if name == "rloo":  # unbiased: zero within 4 SE, and the test of zero bias does not reject
            assert abs(against_draws["grad_bias_sq"]) < 4 * error, (against_draws, error)
            assert against_draws["grad_bias_p"] > 1e-3
            continue
        difference = against_draws["grad_bias_sq"] - against_exact["grad_bias_sq"]
        assert abs(difference) < 4 * error, (name, against_exact, against_draws, error)
        # The same M draws against both: given them, the difference is the reference's noise alone.
        reference_only = bias_standard_error(gradients, reference.draws, bias, probe_noise=False)
        assert abs(difference) < 4 * reference_only, (name, difference, reference_only)
        if name != "reinmax":  # reinmax's bias is at the resolution of M = 256 draws here
            assert against_draws["grad_bias_p"] < 1e-6


def test_the_probe_computes_the_same_numbers_and_records_the_reference(one_thread):
    task, batch, targets, _, reference = vae_with_both_references(32, hidden=16, probe_size=8)
    torch.manual_seed(7)
    gradients = draw_gradients_vectorized(task, Gumbel(), 2, batch, 64, targets=targets)
    expected = gradient_statistics(
        gradients, None, deterministic_gradient(task, batch, targets), reference_draws=reference.draws
    )
    torch.manual_seed(7)
    found = probe(task, Gumbel(), 2, 64, wrt="distribution", reference_seed=SEED)
    for key, value in expected.items():
        assert found[key] == pytest.approx(value, rel=1e-9, nan_ok=True), key
    assert {key: found[key] for key in REFERENCE_FIELDS if key != "reference_time_ms"} == {
        "reference_estimator": reference.estimator,
        "reference_samples": reference.samples,
        "reference_draws": 32,
        "reference_variance": pytest.approx(reference.variance, rel=1e-9),
    }
    assert found["reference_time_ms"] > 0


def test_the_reference_draws_from_a_stream_of_its_own(one_thread):
    # The probe's draws, and the global stream after the probe, are the same with a Monte-Carlo reference
    # as without a reference; the reference's own draws change with its seed (by default the probe's seed
    # + a constant).
    results, after = {}, {}
    for kind in ("none", "monte_carlo"):
        torch.manual_seed(0)
        task = VAE(hidden=16, probe_size=8, reference=kind, reference_draws=8)
        torch.manual_seed(3)
        results[kind] = probe(task, Gumbel(), 2, 16, wrt="distribution")
        after[kind] = torch.rand(4)
    assert results["none"]["grad_variance"] == results["monte_carlo"]["grad_variance"]
    assert torch.equal(after["none"], after["monte_carlo"])
    batch = task.probe_batch()
    targets = probe_targets(task, batch, "distribution")
    first, again, other = (monte_carlo_reference(task, batch, targets, 8, seed=s) for s in (1, 1, 2))
    assert torch.equal(first.draws, again.draws) and not torch.equal(first.draws, other.draws)


def test_a_gaussian_task_gets_rloo_and_its_mean_is_the_analytic_gradient(one_thread):
    torch.manual_seed(0)
    task = GaussianTask(dim=3)
    targets = probe_targets(task, None)
    reference = monte_carlo_reference(task, None, targets, 400, seed=5)
    assert (reference.estimator, reference.samples) == ("rloo", 64)
    analytic = flatten(task.reference_gradient(None))
    standard_error = reference.draws.std(0) / math.sqrt(400)
    assert bool(((reference.draws.mean(0) - analytic).abs() < 4.5 * standard_error).all())


def test_the_reference_setting():
    assert choose_reference("auto", 4096, 4096) == "exact"
    assert choose_reference("auto", 4097, 4096) == "monte_carlo"
    assert choose_reference("monte_carlo", 10, 4096) == "monte_carlo"
    assert choose_reference("none", 10**20, 4096) == "none"
    with pytest.raises(ConfigError, match="task.reference must be auto or monte_carlo here"):
        choose_reference("exact", 10**20, 4096)
    with pytest.raises(ConfigError, match="task.reference must be one of auto"):
        choose_reference("enumerate", 10, 4096)
    torch.manual_seed(0)
    assert VAE(hidden=4).reference == "exact"
    assert VAE(hidden=4, classes=16, variables=4).reference == "monte_carlo"
    with pytest.raises(ConfigError, match="task.reference_draws must be an integer >= 2"):
        VAE(hidden=4, reference_draws=1)


def test_a_run_records_the_monte_carlo_reference_in_its_summary_only(config_factory, tmp_path):
    from bench.run.runner import run

    config = config_factory(
        "task=vae",
        "estimator=gumbel",
        "task.reference=monte_carlo",
        "task.reference_draws=16",
        "task.hidden=16",
        "steps=2",
        "probe.every=0",
        "probe.draws=8",
        "threads=1",
    )
    summary = run(config, tmp_path)
    assert summary["status"] == "ok", summary["error"]
    assert summary["reference"] == "monte_carlo" and summary["reference_draws"] == 16
    assert summary["reference_estimator"] in ("leg", "rloo") and summary["reference_variance"] > 0
    assert math.isfinite(summary["grad_bias_sq"]) and summary["grad_bias_p"] is not None
    assert summary_problems(json.loads((tmp_path / "summary.json").read_text())) == []
    metrics = (tmp_path / "metrics.csv").read_text()
    assert "grad_bias_sq" in metrics and "reference_" not in metrics  # seed-determined numbers only
    # A summary that presents Monte-Carlo fields under another reference, or hides them, breaks the contract.
    assert summary_problems({**summary, "reference": "exact"})
    assert summary_problems({key: value for key, value in summary.items() if key != "reference_draws"})
