"""Estimators with learned control variates (REBAR, RELAX, LAX), gapped straight-through and local expectation
gradients: unbiasedness by the calibrated test of zero bias, their evaluations of f, and the harness's
training of an estimator's own parameters (own optimizer, variance objective, frozen in probes, checkpoints).

The bias verdicts use the probe's test of zero bias (``grad_bias_p``, docs/design.md, "Metrics"), calibrated
for unbiased estimators: under no bias p is uniform, so one check with p > 1e-3 fails by chance with
probability 1e-3; the seeds are fixed, so each check is deterministic. Every unbiased estimator is tested at
active parameters of its own (η ≠ 1, λ ≠ 0.5, the network's output scale s = 1), where the control variate
matters: unbiasedness must hold for every value of them, not only at the initial s = 0.
"""

from __future__ import annotations

import pytest
import torch

from bench.formats.errors import ConfigError
from bench.run import checkpoint
from bench.run.build import setup
from bench.run.checkpoint import Checkpoints
from bench.run.loop import Recorder, train
from bench.run.probe import probe
from bench.run.sweep import config_digest
from bench.tasks.gaussian import GaussianTask
from bench.tasks.toy import Toy
from bench.tasks.vae import VAE
from estimators import rebar as rebar_module
from estimators.gst import GappedStraightThrough
from estimators.leg import LocalExpectation
from estimators.rebar import REBAR
from estimators.relax import LAX, RELAX
from tests.helpers import make_config

DRAWS = 2048  # M: probe draws per check


def active_relax(**settings) -> RELAX:
    """RELAX with its network's output switched on (s = 1; the network built at its first call)."""
    estimator = RELAX(**settings)
    with torch.no_grad():
        estimator.network.scale.fill_(1.0)
    return estimator


def active_lax() -> LAX:
    estimator = LAX()
    with torch.no_grad():
        estimator.network.scale.fill_(1.0)
    return estimator


UNBIASED_ON_THE_TOY = {
    "rebar": lambda: REBAR(eta=0.7, tau=0.3),
    "relax": lambda: active_relax(eta=0.8, tau=0.4),
    "relax_network_only": lambda: active_relax(relaxed_objective=False, tau=0.4),  # the paper's toy form
}


@pytest.mark.parametrize("name", list(UNBIASED_ON_THE_TOY))
def test_unbiased_on_the_toy_task(name, one_thread):
    # Toy, 3 Bernoulli variables at p(b = 1) = 0.3, S = 2, M = 2048, against the analytic gradient.
    task = Toy(dim=3, p0=0.3)
    torch.manual_seed(0)
    found = probe(task, UNBIASED_ON_THE_TOY[name](), 2, DRAWS)
    assert found["grad_bias_p"] > 1e-3, found


def test_negative_controls_a_biased_estimator_and_a_broken_rebar_are_rejected(one_thread, monkeypatch):
    # The same test at the same point rejects gapped straight-through (biased by design) and REBAR whose z̃
    # has its path to θ cut (the term −η∇f(σ_λ(z̃)) lost: the score-function term of the control variate is no
    # longer matched by its reparameterized terms).
    task = Toy(dim=3, p0=0.3)
    torch.manual_seed(0)
    assert probe(task, GappedStraightThrough(), 2, 256)["grad_bias_p"] < 1e-6
    conditional = rebar_module.conditional_perturbation

    def not_reparameterized(log_probs, hard, uniform):
        return conditional(log_probs.detach(), hard, uniform)

    monkeypatch.setattr(rebar_module, "conditional_perturbation", not_reparameterized)
    torch.manual_seed(0)
    # At the initial η = 1, λ = 0.5 its squared bias is about 0.4‖g*‖²; M = 16384 draws (cheap here).
    assert probe(task, REBAR(), 2, 8 * DRAWS)["grad_bias_p"] < 1e-6


def test_leg_is_exact_on_the_toy_task(one_thread):
    # f is separable: every draw of local expectation gradients is the analytic gradient up to rounding.
    task = Toy(dim=3, p0=0.3)
    torch.manual_seed(0)
    found = probe(task, LocalExpectation(), 2, DRAWS)
    exact = task.reference_gradient()[0].norm()
    assert found["grad_bias"] <= 1e-5 * float(exact), found


UNBIASED_ON_THE_VAE = {
    "rebar": lambda: REBAR(eta=0.7, tau=0.3),
    "relax": lambda: active_relax(eta=0.8, tau=0.4),
    "leg": LocalExpectation,
}


@pytest.mark.parametrize("name", list(UNBIASED_ON_THE_VAE))
def test_unbiased_on_the_vae(name, one_thread):
    # The 4×8 VAE at initialization (8 probe images), S = 2, M = 2048, with respect to the encoder's output
    # logits, against the exact enumeration of the 8⁴ codes.
    torch.manual_seed(3)
    task = VAE(probe_size=8)
    torch.manual_seed(4)
    assert task.reference == "exact"
    found = probe(task, UNBIASED_ON_THE_VAE[name](), 2, DRAWS, wrt="distribution")
    assert found["grad_bias_p"] > 1e-3, found


def test_relax_gives_the_decoder_an_unbiased_gradient(one_thread):
    # With respect to every parameter of the VAE (encoder and decoder): the decoder gets ∇f(b) plus
    # η(∇f(σ_λ(z)) − ∇f(σ_λ(z̃))), zero in expectation.
    torch.manual_seed(3)
    task = VAE(probe_size=8)
    torch.manual_seed(4)
    assert probe(task, active_relax(eta=0.8, tau=0.4), 2, DRAWS)["grad_bias_p"] > 1e-3


def test_lax_is_unbiased_on_the_gaussian_task(one_thread):
    task = GaussianTask(dim=3)
    torch.manual_seed(0)
    found = probe(task, active_lax(), 1, DRAWS)
    assert found["grad_bias_p"] > 1e-3, found


@pytest.mark.parametrize(
    ("estimator", "per_sample"),
    [
        (lambda: REBAR(), 3),
        (lambda: RELAX(), 3),
        (lambda: RELAX(relaxed_objective=False), 1),
        (GappedStraightThrough, 1),
        (LocalExpectation, 1 + 3),  # 1 + L(C − 1), L = 3 coupled Bernoulli variables
    ],
)
def test_f_evaluations_are_the_evaluations_made(estimator, per_sample):
    # The rows f is called on in one estimate (S = 2) add up to f_evaluations, which is S·per_sample.
    task = Toy(dim=3, p0=0.3)
    f, counted = task.objective(), []

    def counting(z: torch.Tensor) -> torch.Tensor:
        counted.append(z.shape[0])
        return f(z)

    made = estimator()
    made(task.logits, counting, 2)
    assert made.f_evaluations(task.logits, f, 2) == sum(counted) == 2 * per_sample


def test_an_estimator_that_does_not_fit_the_task_is_refused_with_those_that_do():
    for estimator, task, kind in (("relax", "gaussian", "gaussian"), ("lax", "toy", "categorical")):
        with pytest.raises(ConfigError) as error:
            setup(make_config(f"task={task}", f"estimator={estimator}"))
        message = str(error.value)
        assert f"task's latent variables are {kind}" in message and "Estimators that fit" in message
        assert error.value.status == "skipped"


SHORT = (
    "task=toy",
    "task.dim=3",
    "task.p0=0.3",
    "estimator=relax",
    "samples=2",
    "probe.draws=4",
    "threads=1",
)
SHORT_OWN = (*SHORT, "estimator.optimizer.lr=0.05", "log_every=1")


def own_state(estimator) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in estimator.state_dict().items()}


def test_own_parameters_train_on_the_variance_objective_never_in_probes(tmp_path, one_thread):
    # RELAX on the toy for 6 steps: its own parameters move (their own optimizer, on the variance objective),
    # the task's optimizer holds none of them, and probing at every step gives the same training as probing
    # only at the end (probes measure the estimator frozen; they also leave no gradient in it).
    states, rows = [], []
    for every in (1, 0):
        config = make_config(*SHORT_OWN, "steps=6", f"probe.every={every}")
        torch.manual_seed(config.seed)
        task, estimator, optimizer = setup(config)
        initial = own_state(estimator)
        held = {id(parameter) for group in optimizer.param_groups for parameter in group["params"]}
        assert not held & {id(parameter) for parameter in estimator.own_parameters()}
        recorder = Recorder(tmp_path / f"every{every}")
        train(config, task, estimator, optimizer, recorder)
        states.append(own_state(estimator))
        rows.append([row for row in recorder.rows if row[1] == "train_loss"])
        moved = [
            name
            for name in states[-1]
            if not torch.equal(states[-1][name], initial.get(name, 0 * states[-1][name]))
        ]
        assert {"eta", "log_temperature", "network.scale"} <= set(moved), moved
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][name], states[1][name]) for name in states[0])
    assert rows[0] == rows[1] and len(rows[0]) == 6


def test_own_parameters_and_their_optimizer_resume_bit_identically(tmp_path, one_thread):
    # Five steps uninterrupted, against four, a checkpoint, and the fifth from fresh objects: the estimator's
    # parameters and its optimizer's state (saved in the checkpoint) at step 5 are equal bit for bit.
    settings = (*SHORT_OWN, "steps=5", "probe.every=3", "checkpoint.steps=[4,5]")
    config = make_config(*settings)
    digest = config_digest(config)
    torch.manual_seed(config.seed)
    task, estimator, optimizer = setup(config)
    train(
        config,
        task,
        estimator,
        optimizer,
        Recorder(tmp_path / "whole"),
        Checkpoints(tmp_path / "whole", config, digest),
    )

    fresh = make_config(*settings)
    torch.manual_seed(fresh.seed)
    task, estimator, optimizer = setup(fresh)
    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    source = checkpoint.checkpoint_path(tmp_path / "whole", 4)
    for path in (source, checkpoint.sidecar_path(source)):
        (tmp_path / "resumed" / "checkpoints" / path.name).write_bytes(path.read_bytes())
    loader = Checkpoints(tmp_path / "resumed", fresh, digest)
    assert loader.choose() is not None and loader.resumed["estimator_optimizer"]["state"]
    train(fresh, task, estimator, optimizer, Recorder(tmp_path / "resumed"), loader)

    saved = [
        torch.load(checkpoint.checkpoint_path(folder, 5), weights_only=True)
        for folder in (tmp_path / "whole", tmp_path / "resumed")
    ]
    for part in ("estimator", "estimator_optimizer"):
        whole, resumed = (tensors(state[part]) for state in saved)
        assert whole.keys() == resumed.keys() and whole
        assert all(torch.equal(whole[key], resumed[key]) for key in whole), part


def tensors(node, path: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested state dict, by path."""
    if isinstance(node, torch.Tensor):
        return {path: node}
    found: dict[str, torch.Tensor] = {}
    items = (
        node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list | tuple) else ()
    )
    for key, value in items:
        found.update(tensors(value, f"{path}/{key}"))
    return found
