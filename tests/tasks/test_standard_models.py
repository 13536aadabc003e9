"""The standard models as task presets and experiments: the papers' sizes and settings, the data named in
every result (digits28, the offline stand-in, is never called MNIST), and the VAE settings they need (hidden
widths, activation, binarization, a learned prior)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bench.run.build import build
from bench.tasks.vae import VAE
from estimators.exact import Exact
from tests.helpers import CONF, make_config

# preset: (latent, L, C, encoder widths, activation, binarization, prior, batch)
PRESETS = {
    "categorical_vae_20x10": ("categorical", 20, 10, [512, 256], nn.ReLU, "static", "uniform", 100),
    "categorical_vae_30x10": ("categorical", 30, 10, [512, 256], nn.ReLU, "static", "uniform", 100),
    "bernoulli200_linear": ("bernoulli", 200, 2, [], None, "dynamic", "learned", 100),
    "bernoulli200_nonlinear": ("bernoulli", 200, 2, [200, 200], nn.LeakyReLU, "dynamic", "learned", 100),
    **{
        f"reinmax_{classes}_{variables}": (
            "categorical",
            variables,
            classes,
            [512, 256],
            nn.ReLU,
            "none",
            "uniform",
            100,
        )
        for classes, variables in [(8, 4), (4, 24), (8, 16), (16, 12), (64, 8), (10, 30)]
    },
    "reinmax_32_64": ("categorical", 64, 32, [512, 256], nn.LeakyReLU, "none", "uniform", 200),
}


def linear_sizes(network: nn.Sequential) -> list[tuple[int, int]]:
    return [(layer.in_features, layer.out_features) for layer in network if isinstance(layer, nn.Linear)]


def test_the_presets_are_the_papers_models():
    assert {path.stem for path in (CONF / "task").glob("*.yaml")} >= set(PRESETS)
    for name, (latent, variables, classes, widths, activation, binarization, prior, batch) in PRESETS.items():
        config = make_config(f"task={name}", "task.reference=none")
        assert config.task.name == f"{name}_digits28"  # the data is in every result's task name
        torch.manual_seed(0)
        task = build(config.task)
        assert (task.data_name, task.binarization, task.batch_size) == ("digits28", binarization, batch)
        codes = variables * (1 if latent == "bernoulli" else classes)
        assert linear_sizes(task.encoder) == list(zip([784, *widths], [*widths, codes], strict=True)), name
        assert linear_sizes(task.decoder) == list(
            zip([codes, *widths[::-1]], [*widths[::-1], 784], strict=True)
        )
        hidden = [type(layer) for layer in task.encoder if not isinstance(layer, nn.Linear)]
        assert hidden == [activation] * len(widths)
        assert (task.variables, task.classes, task.prior_logits is not None) == (
            variables,
            classes,
            prior == "learned",
        )
    nonlinear = build(make_config("task=bernoulli200_nonlinear", "task.reference=none").task)
    assert nonlinear.encoder[1].negative_slope == 0.3  # DisARM's and RODEO's LeakyReLU


def test_the_reinmax_grid_takes_each_points_settings_from_its_script():
    # mnist_vae/reinmax_${C}_${L}.sh: --lr, --temperature, --optim; 32 x 64: --batch-size 200, 500k updates.
    expected = {
        "reinmax_8_4": (5e-4, 1.3, "adam", 80000),
        "reinmax_4_24": (5e-4, 1.5, "radam", 80000),
        "reinmax_8_16": (7e-4, 1.5, "radam", 80000),
        "reinmax_16_12": (7e-4, 1.5, "radam", 80000),
        "reinmax_64_8": (5e-4, 1.5, "radam", 80000),
        "reinmax_10_30": (5e-4, 1.3, "radam", 80000),
        "reinmax_32_64": (5e-4, 1.1, "radam", 500000),
    }
    for task, (lr, tau, optimizer, steps) in expected.items():
        config = make_config("+experiment=reinmax_grid", f"task={task}", "estimator=reinmax")
        assert (config.optimizer.lr, config.estimator.tau, config.optimizer.name, config.steps) == (
            lr,
            tau,
            optimizer,
            steps,
        )
        assert (
            config.optimizer._target_ == {"adam": "torch.optim.Adam", "radam": "torch.optim.RAdam"}[optimizer]
        )
    jang = make_config("+experiment=categorical_vae_estimators", "estimator=gumbel_st")
    assert (jang.estimator.tau_min, jang.estimator.anneal_rate, jang.estimator.anneal_every) == (
        0.5,
        1e-5,
        500,
    )
    assert make_config("+experiment=categorical_vae_estimators", "estimator=reinmax").estimator.tau_min == 1.0


def test_a_standard_model_runs_on_the_stand_in_and_says_so(tmp_path):
    from bench.run.runner import run

    config = make_config(
        "task=bernoulli200_linear",
        "task.reference=none",
        "task.eval_samples=2",
        "estimator=disarm",
        "samples=2",
        "steps=2",
        "probe.every=0",
        "probe.draws=2",
        "threads=1",
    )
    summary = run(config, tmp_path)
    assert summary["status"] == "ok", summary["error"]
    assert summary["task"] == "bernoulli200_linear_digits28" and summary["data"] == "digits28"
    assert "mnist" not in (tmp_path / "summary.json").read_text().lower()
    assert (
        make_config("task=categorical_vae_20x10", "task.data=mnist").task.name
        == "categorical_vae_20x10_mnist"
    )


def test_hidden_widths_and_activations():
    torch.manual_seed(0)
    linear = VAE(hidden=[], data="digits")
    assert linear_sizes(linear.encoder) == [(64, 32)] and linear_sizes(linear.decoder) == [(32, 64)]
    deep = VAE(hidden=[16, 8], activation="tanh")
    assert linear_sizes(deep.encoder) == [(64, 16), (16, 8), (8, 32)]
    assert linear_sizes(deep.decoder) == [(32, 8), (8, 16), (16, 64)]
    assert isinstance(deep.encoder[1], nn.Tanh)
    for bad, message in (
        ({"hidden": [8, 0]}, "task.hidden must be an integer >= 1 or a list of them"),
        ({"activation": "gelu"}, "task.activation must be one of relu, leaky_relu, tanh"),
        ({"prior": "mixture"}, "task.prior must be one of uniform, learned"),
    ):
        with pytest.raises(ValueError, match=message):
            VAE(**bad)


def test_the_default_vae_is_built_as_before():
    # hidden=128 (an int) is one hidden layer: the same modules, in the same order, from the same seed.
    torch.manual_seed(0)
    task = VAE()
    torch.manual_seed(0)
    expected = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32))
    assert all(
        torch.equal(a, b) for a, b in zip(task.encoder.parameters(), expected.parameters(), strict=True)
    )


@pytest.mark.parametrize("latent", ["categorical", "bernoulli"])
def test_a_learned_prior_enters_the_kl_and_the_exact_likelihood(latent):
    torch.manual_seed(1)
    task = VAE(
        latent=latent, variables=3, classes=None if latent == "bernoulli" else 4, hidden=8, prior="learned"
    )
    uniform = VAE(latent=latent, variables=3, classes=None if latent == "bernoulli" else 4, hidden=8)
    uniform.load_state_dict({k: v for k, v in task.state_dict().items() if k != "prior_logits"})
    images = task.test_images[:16]
    with torch.no_grad():  # at its initial logits 0 the learned prior is the uniform one
        assert task.measure(images) == pytest.approx(uniform.measure(images), rel=1e-5, abs=1e-6)
        task.prior_logits.normal_()
    logits = task.distribution(images)
    log_prior = task.log_prior()
    q = logits.softmax(-1)
    expected_kl = (q * (q.log() - log_prior)).sum((-1, -2))
    assert torch.allclose(task.kl(logits), expected_kl, atol=1e-5)
    # −log p(x) by brute force over the codes: −log Σ_z p(z) p(x | z).
    codes = task.all_codes()
    log_likelihood = -task.objective(images)(codes.unsqueeze(1).expand(-1, len(images), -1, -1))
    log_marginal = torch.logsumexp(log_likelihood + (codes * log_prior).sum((-1, -2)).unsqueeze(1), 0)
    measured = task.enumerated_terms(images)["nll"]
    assert torch.allclose(measured, -log_marginal, atol=1e-4)
    # Its gradient needs no estimator: the KL is analytic, so the exact loss's gradient reaches the prior.
    loss = task.loss(Exact(), 1, images)
    (gradient,) = torch.autograd.grad(loss, [task.prior_logits])
    assert math.isfinite(float(gradient.norm())) and float(gradient.norm()) > 0


def test_the_20x10_probe_benchmark_runs(monkeypatch, one_thread):
    import bench.campaigns.perf.measurements as measurements

    monkeypatch.setattr(measurements, "PROBE_DRAWS", 4)  # python -m bench.perf draws 256
    from bench.campaigns.perf.verdicts import StoppingRule

    (result,) = measurements.measure_probe(
        "categorical_vae_20x10",
        StoppingRule(least=1, most=1),
        name="probe_vae_20x10",
        whole_probe=False,
        goal=None,
    )
    assert result.name == "probe_vae_20x10" and result.status == "ok" and result.ratio > 0
    assert "categorical_vae_20x10" in result.what and "(32 images)" in result.what
