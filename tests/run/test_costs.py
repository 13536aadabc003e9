"""Deterministic costs: f evaluations per gradient estimate for every estimator, and FLOPs."""

from __future__ import annotations

import pytest
import torch

from bench.run.build import setup
from bench.run.costs import deterministic_costs
from tests.helpers import CONF, make_config

# estimator -> (task overrides, S, the evaluations of f per estimate for one data point)
EXPECTED = {
    "score_function": (("task=toy", "task.dim=3"), 3, 3),
    "rloo": (("task=toy", "task.dim=3"), 4, 4),
    "disarm": (("task=toy", "task.dim=3"), 4, 4),  # S/2 antithetic pairs, two evaluations each
    "gumbel": (("task=vae",), 2, 2),
    "gumbel_st": (("task=vae",), 2, 2),
    "st": (("task=vae",), 2, 2),
    "reinmax": (("task=vae",), 2, 2),
    "reinmax_rao": (("task=vae",), 2, 2),  # R conditional Gumbel draws of the backward, one f per sample
    "reinmax_cv": (("task=vae",), 2, 2),
    "gumbel_rao": (("task=vae",), 2, 2),  # R Gumbel draws of the backward, one evaluation of f per sample
    "exact": (("task=vae",), 2, 8**4),  # every code of 4 variables of 8 classes, whatever S
    "reparam": (("task=gaussian", "task.dim=3"), 2, 2),
    "measure_valued": (("task=gaussian", "task.dim=3"), 2, 2 * (1 + 4 * 3)),  # S·(1 + 4n), n = 3 coordinates
    "vq_st": (("task=vqvae",), 1, 1),
    "vq_rotation": (("task=vqvae",), 1, 1),
    "vq_stochastic": (("task=vqvae",), 1, 1),
    "rebar": (("task=toy", "task.dim=3"), 2, 6),  # f at b, σ_λ(z) and σ_λ(z̃): 3S
    "relax": (("task=toy", "task.dim=3"), 2, 6),  # as rebar (S with estimator.relaxed_objective=false)
    "lax": (("task=gaussian", "task.dim=3"), 2, 2),
    "gst": (("task=vae",), 2, 2),
    "leg": (("task=vae",), 2, 2 * (1 + 4 * 7)),  # S·(1 + L(C − 1)): 4 coupled variables of 8 classes
    "indecater": (("task=vae",), 2, 2 * (1 + 4 * 7)),  # leg's estimator under its authors' name
    "rodeo": (("task=toy", "task.dim=3"), 2, 2),  # f at the S samples (and one backward pass through f)
    "vimco": (("task=vae", "task.objective=iwae", "task.iwae_samples=3"), 2, 2),  # S K-sets, one f each
    "unordered_set": (("task=toy", "task.dim=3"), 4, 4),  # min(S, C^m) distinct outcomes, here 4 of 2³
    "none": (("task=embedding", "task.train_size=2000", "task.test_size=100"), 4, 1),  # nothing sampled
}


def test_every_estimator_has_its_f_evaluations_stated_here():
    assert set(EXPECTED) == {path.stem for path in (CONF / "estimator").glob("*.yaml")}


@pytest.mark.parametrize("estimator", sorted(EXPECTED))
def test_f_evals_per_estimate(estimator, one_thread):
    overrides, samples, expected = EXPECTED[estimator]
    config = make_config(*overrides, f"estimator={estimator}", f"samples={samples}")
    torch.manual_seed(0)
    task, model_estimator, _ = setup(config)
    costs = deterministic_costs(task, model_estimator, samples)
    assert costs["f_evals"] == expected
    assert all(parameter.grad is None for parameter in task.parameters())  # measuring left no gradient


def test_flops_count_the_matrix_work_and_nothing_else(one_thread):
    torch.manual_seed(0)
    task, estimator, _ = setup(make_config("task=vae", "estimator=gumbel", "samples=2"))
    vae = deterministic_costs(task, estimator, 2)["estimate_flops"]
    # Forward: encoder 64→128→32 and decoder 32→128→64 on 32 images, the decoder on S = 2 samples of each;
    # backward about twice the forward. 2·(in·out) FLOPs per row and linear layer.
    encoder = 2 * 32 * (64 * 128 + 128 * 32)
    decoder = 2 * 2 * 32 * (32 * 128 + 128 * 64)
    assert 2.5 * (encoder + decoder) < vae < 3.5 * (encoder + decoder)
    task, estimator, _ = setup(make_config("task=toy", "estimator=rloo", "samples=2"))
    assert deterministic_costs(task, estimator, 2)["estimate_flops"] == 0  # no matrix products
