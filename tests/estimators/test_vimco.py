"""VIMCO and the multi-sample objective (the VAE with objective=iwae): the exact gradient of the K-sample
bound by enumerating every K-tuple, VIMCO unbiased against it by the calibrated bias test (M = 2048), RLOO
over S independent K-sets and the unordered set estimator on the same bound, the Gumbel relaxation rejected
(negative control), VIMCO's learning signals, and the refusal on the ELBO (skipped).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bench.formats.errors import ConfigError
from bench.run.build import setup
from bench.run.probe import probe
from bench.tasks.vae import VAE
from estimators import VIMCO, EstimatorError, Gumbel, ScoreFunction, UnorderedSet
from estimators.vimco import leave_one_out_bounds
from tests.helpers import make_config

BITS, DRAWS = 3, 3  # 3 Bernoulli latents, K = 3: (2³)³ = 512 K-tuples per image


def small_iwae_vae() -> VAE:
    torch.manual_seed(0)
    return VAE(
        latent="bernoulli", variables=BITS, hidden=8, probe_size=4, objective="iwae", iwae_samples=DRAWS
    )


def enumerated_bound_gradient(task: VAE, batch: torch.Tensor) -> list[torch.Tensor]:
    """∇ of −mean_x E_{z_1..K ~ q}[log (1/K) Σ_k exp w_k] by summing over every K-tuple of codes, written out
    here independently of the estimators and of the task's multi-sample objective."""
    codes = torch.tensor(
        list(itertools.product([0.0, 1.0], repeat=BITS)), dtype=batch.dtype
    )  # (8, L): the bit z_l
    one_hot = torch.stack([1 - codes, codes], -1)  # (8, L, 2)
    with torch.enable_grad():
        log_q = (task.encode(batch).log_softmax(-1).unsqueeze(1) * one_hot).sum((-1, -2))  # (B, 8)
        logits = task.decode(one_hot)  # (8, D)
        log_likelihood = batch @ logits.T - torch.nn.functional.softplus(logits).sum(-1)  # (B, 8)
        log_weight = log_likelihood - BITS * math.log(2) - log_q  # uniform prior
        tuples = torch.tensor(list(itertools.product(range(len(codes)), repeat=DRAWS)))  # (512, K)
        weights = log_weight[:, tuples]  # (B, 512, K)
        bound = torch.logsumexp(weights, -1) - math.log(DRAWS)
        probability = log_q[:, tuples].sum(-1).exp()
        loss = -(probability * bound).sum(-1).mean()
        return list(torch.autograd.grad(loss, list(task.probed_parameters().values())))


def test_the_tasks_exact_reference_is_the_enumerated_bound(one_thread):
    # In float64: in float32 the two sums over 512 tuples of bounds near −45 nats differ by 1e-4 relative.
    task = small_iwae_vae().double()
    batch = task.probe_batch()
    assert task.reference == "exact" and task.multi_sample
    expected = torch.cat([g.reshape(-1) for g in enumerated_bound_gradient(task, batch)])
    found = torch.cat([g.reshape(-1) for g in task.reference_gradient(batch)])
    assert float((found - expected).norm()) <= 1e-10 * float(expected.norm())


@pytest.mark.parametrize(
    ("name", "estimator", "samples"),
    [
        ("vimco", VIMCO, 1),
        ("rloo", lambda: ScoreFunction(baseline="loo"), 2),
        ("unordered_set", UnorderedSet, 2),
    ],
)
def test_unbiased_on_the_bound_by_the_calibrated_bias_test(name, estimator, samples, one_thread):
    # M = 2048 draws of the encoder's gradient; VIMCO draws S = 1 K-set, RLOO S = 2 independent K-sets, the
    # unordered set estimator 2 distinct K-tuples of the joint (the 512 outcomes of q³).
    task = small_iwae_vae()
    torch.manual_seed(1)
    found = probe(task, estimator(), samples, 2048)
    assert found["grad_bias_p"] > 1e-3, (name, found["grad_bias_p"])


def test_vimco_has_far_less_variance_than_the_plain_score_function_and_the_relaxation_is_biased(one_thread):
    task = small_iwae_vae()
    torch.manual_seed(2)
    vimco = probe(task, VIMCO(), 1, 2048, wrt="distribution")
    plain = probe(task, ScoreFunction(), 1, 2048, wrt="distribution")
    # The plain score function multiplies ∇log q by the whole bound (about −45 nats here): its variance is
    # thousands of times VIMCO's; a factor 10 leaves room for the two estimates' own noise.
    assert vimco["grad_variance"] * 10 < plain["grad_variance"], (
        vimco["grad_variance"],
        plain["grad_variance"],
    )
    # Negative control: the Gumbel-Softmax relaxation trains a relaxed bound; the same test rejects it.
    assert probe(task, Gumbel(), 1, 2048, wrt="distribution")["grad_bias_p"] < 1e-6


def test_learning_signals_use_the_geometric_mean_of_the_other_weights():
    generator = torch.Generator().manual_seed(3)
    weights = 5 * torch.randn(6, 4, generator=generator, dtype=torch.float64)
    found = leave_one_out_bounds(weights)
    for j in range(4):
        replaced = weights.clone()
        replaced[:, j] = torch.cat([weights[:, :j], weights[:, j + 1 :]], 1).mean(1)
        expected = torch.log(replaced.exp().mean(1))
        assert torch.allclose(found[:, j], expected, rtol=0, atol=1e-12)


def test_refused_where_there_is_no_multi_sample_objective(one_thread):
    for overrides in (("task=vae",), ("task=toy",)):
        with pytest.raises(ConfigError, match="multi-sample objective") as refused:
            setup(make_config(*overrides, "estimator=vimco"))
        assert refused.value.status == "skipped"
    task = VAE(hidden=8, probe_size=4, objective="iwae", iwae_samples=1)
    batch = task.probe_batch()
    with pytest.raises(EstimatorError, match="K >= 2"):
        VIMCO()(task.distribution(batch), task.objective(batch), 1)
    with pytest.raises(EstimatorError, match="multi-sample objective"):
        VIMCO()(task.distribution(batch), lambda z: z.sum((-1, -2)), 1)


def test_the_elbo_task_is_unchanged_by_the_objective_setting(one_thread):
    torch.manual_seed(5)
    default = VAE(hidden=8, probe_size=4)
    torch.manual_seed(5)
    elbo = VAE(hidden=8, probe_size=4, objective="elbo", iwae_samples=7)
    batch = default.probe_batch()
    assert default.distribution(batch).shape == (4, 4, 8) and not default.multi_sample
    for a, b in zip(default.reference_gradient(batch), elbo.reference_gradient(batch), strict=True):
        assert torch.equal(a, b)
