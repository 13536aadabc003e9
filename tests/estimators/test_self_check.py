"""Estimators that check themselves: every estimator config in ``conf/estimator/`` is checked here, or listed
with the reason it cannot be, and a config that is neither fails the suite.

- ``unbiased = True``: on the smallest task of each latent kind it fits that has an exact or analytic
  gradient (the toy for categorical latents, Bernoulli so that two-class estimators fit too; the Gaussian
  task; for an estimator of a multi-sample objective, the smallest importance-weighted VAE, whose 16 K-set
  outcomes are enumerated), the probe's own test of zero bias (``bench.run.probe.probe``, its
  ``grad_bias_p``: whichever test the probe runs) does not reject: p > ``UNBIASED_P``.
- ``unbiased = False``: on a task where its bias is known to be nonzero, the same test rejects: p <
  ``BIASED_P``. For categorical latents that is a Bernoulli VAE of 3 variables at initialization (8 codes,
  the exact gradient by enumeration): its decoder makes f far from quadratic, where ReinMax is exact in mean
  at τ = 1 (the toy's f is quadratic, so it cannot show ReinMax's bias).
- ``exact`` is checked to be exact (every draw equal to the reference); the rest is listed in ``UNCHECKED``
  with the reason.

Fixed seeds (one per estimator, from its name), so the outcome is deterministic; with about 15 unbiased
checks at 1e-3 the chance that one fixed seed rejects a truly unbiased estimator is about 1.5%, and the
biased estimators are rejected at p values far below 1e-6 (1e-28 to 0 at M = 500 draws), the negative
controls of the test itself.
"""

from __future__ import annotations

import zlib

import pytest
import torch

from bench.campaigns.same_point.roster import estimator_node
from bench.run.build import build
from bench.run.probe import probe
from bench.tasks.gaussian import GaussianTask
from bench.tasks.toy import Toy
from bench.tasks.vae import VAE
from tests.helpers import CONF

UNBIASED_P = 1e-3
BIASED_P = 1e-6
DRAWS = 500

UNCHECKED = {
    "none": "nothing is sampled (latent kind none): its gradient is the task's own, exact by construction",
    "vq_st": "codebook latents: the quantizer has no true gradient to compare with",
    "vq_rotation": "codebook latents: the quantizer has no true gradient to compare with",
    "vq_stochastic": "codebook latents (it is as biased as the categorical estimator it wraps, which is "
    "checked here in its own right)",
}


def configured() -> list[str]:
    return sorted(path.stem for path in (CONF / "estimator").glob("*.yaml"))


def seeded(name: str) -> None:
    torch.manual_seed(zlib.crc32(name.encode()))


def toy() -> Toy:
    """Three Bernoulli variables at p(b = 1) = 0.2, 0.5, 0.8 (analytic gradient)."""
    task = Toy(dim=3, classes=2)
    with torch.no_grad():
        task.logits.zero_()
        task.logits[:, 1] = torch.logit(torch.tensor([0.2, 0.5, 0.8]))
    return task


def gaussian() -> GaussianTask:
    return GaussianTask(dim=2, f="cos", k=1.5, mu0=0.7, sigma0=0.8)


def small_vae(variables: int = 3, **settings) -> VAE:
    """A Bernoulli VAE of 3 variables on 8 probe images: exact enumeration of its 8 codes."""
    torch.manual_seed(0)
    return VAE(latent="bernoulli", variables=variables, hidden=16, probe_size=8, **settings)


def iwae_vae() -> VAE:
    """The smallest multi-sample objective: 2 Bernoulli variables, K = 2 draws (2^(2·2) = 16 outcomes)."""
    return small_vae(variables=2, objective="iwae", iwae_samples=2)


def unbiased_tasks(estimator) -> list[tuple[str, object]]:
    """The tasks with an exact or analytic gradient on which ``estimator`` is checked, by latent kind."""
    tasks = []
    if "categorical" in estimator.latents:
        tasks.append(("iwae_vae", iwae_vae()) if estimator.multi_sample else ("toy", toy()))
    if "gaussian" in estimator.latents and not estimator.multi_sample:
        tasks.append(("gaussian", gaussian()))
    return tasks


def bias_p(name: str, estimator, task) -> float:
    """The probe's p-value of zero bias at the estimator's smallest S; where every draw is the same number
    (no variance for the test to work with: local expectation gradients on the toy's separable f), 1 if that
    number is the reference gradient up to rounding, else 0."""
    seeded(name)
    wrt = "parameters" if isinstance(task, Toy | GaussianTask) else "distribution"
    statistics = probe(task, estimator, estimator.min_samples, DRAWS, wrt=wrt)
    if statistics["grad_bias_p"] == statistics["grad_bias_p"]:
        return statistics["grad_bias_p"]
    # No variance: ‖ḡ − g*‖²/‖g*‖² itself says whether the one value is the reference (relative error 1e-5).
    return 1.0 if statistics["grad_bias_rel"] <= 1e-10 else 0.0


def test_every_estimator_config_is_checked_or_listed_with_a_reason():
    names = configured()
    assert set(UNCHECKED) <= set(names), f"UNCHECKED names no config: {set(UNCHECKED) - set(names)}"
    for name in names:
        if name in UNCHECKED:
            continue
        estimator = build(estimator_node(name))
        kinds_with_a_task = unbiased_tasks(estimator) if estimator.unbiased else []
        checkable = bool(kinds_with_a_task) if estimator.unbiased else "categorical" in estimator.latents
        assert checkable, (
            f"conf/estimator/{name}.yaml: no task with an exact gradient here fits its latents "
            f"{estimator.latents}; add one to tests/estimators/test_self_check.py or list it in UNCHECKED "
            "with the reason."
        )


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name", [name for name in configured() if name not in UNCHECKED])
def test_the_estimator_is_what_it_says(name):
    estimator = build(estimator_node(name))
    if type(estimator).__name__ == "Exact":  # the reference itself: every draw is the exact gradient
        task = toy()
        seeded(name)
        statistics = probe(task, estimator, 1, 4)
        assert statistics["grad_variance"] == pytest.approx(0.0, abs=1e-12)
        assert statistics["grad_bias"] == pytest.approx(0.0, abs=1e-6)
        return
    if estimator.unbiased:
        for task_name, task in unbiased_tasks(estimator):
            p = bias_p(name, estimator, task)
            assert p > UNBIASED_P, f"{name} declares unbiased = True; on {task_name} the bias test: p = {p}"
    else:
        p = bias_p(name, estimator, small_vae())
        assert p < BIASED_P, f"{name} declares unbiased = False, but the bias test does not reject: p = {p}"


@pytest.mark.usefixtures("one_thread")
def test_an_estimator_that_misstates_its_bias_is_caught():
    # Negative controls of the two checks above: straight-through declared unbiased fails the unbiased
    # check, and RLOO declared biased fails the biased one.
    from estimators import ScoreFunction, StraightThrough
    from estimators.base import ESTIMATOR_CLASSES

    class Misstated(StraightThrough):
        unbiased = True

    try:
        assert bias_p("misstated", Misstated(), toy()) <= UNBIASED_P
    finally:
        ESTIMATOR_CLASSES.remove(Misstated)
    assert bias_p("rloo", ScoreFunction(baseline="loo"), small_vae()) >= BIASED_P
