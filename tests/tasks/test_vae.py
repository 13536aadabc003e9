"""The VAE task: model and data, the exact reference, bias of the estimators against it, MNIST files, runs."""

import gzip
import math

import numpy as np
import pytest
import torch

from bench.formats.errors import ConfigError
from bench.run.probe import probe
from bench.run.runner import run
from bench.tasks.vae import VAE, kl_to_uniform
from estimators import Exact, GumbelST, ScoreFunction, StraightThrough
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def small_task() -> VAE:
    torch.manual_seed(0)
    return VAE(hidden=32, probe_size=16)


def parameter_gradients(task: VAE, loss: torch.Tensor) -> torch.Tensor:
    return torch.cat(
        [gradient.reshape(-1) for gradient in torch.autograd.grad(loss, list(task.parameters()))]
    )


def test_shapes_and_defaults(small_task):
    batch = small_task.train_batch(1)
    assert batch.shape == (64, 64) and set(batch.unique().tolist()) == {0.0, 1.0}
    assert small_task.distribution(batch).shape == (64, 4, 8)
    assert small_task.objective(batch)(torch.eye(8)[:4].expand(3, 64, 4, 8)).shape == (3, 64)
    assert small_task.reference == "exact" and small_task.codes == 4096
    splits = (small_task.train_images, small_task.validation_images, small_task.test_images)
    assert [len(split) for split in splits] == [1079, 359, 359]  # scikit-learn's 1797 digits, 60/20/20


def test_exact_gradient_equals_autograd_of_the_enumerated_objective(small_task):
    # Must show 1. The exact estimator (generic enumeration through f) against autograd of the negative ELBO
    # enumerated independently in closed matrix form (``enumerated_terms``: one decoder pass over the 4096
    # codes, q(z|x) as a matrix product), for every parameter, encoder and decoder. Float32 rounding only.
    batch = small_task.probe_batch()
    torch.manual_seed(1)
    estimated = parameter_gradients(small_task, small_task.loss(Exact(), 1, batch))
    enumerated = parameter_gradients(small_task, small_task.enumerated_terms(batch)["elbo"].mean())
    torch.testing.assert_close(estimated, enumerated, rtol=1e-4, atol=1e-4 * float(enumerated.abs().max()))
    reference = torch.cat([gradient.reshape(-1) for gradient in small_task.reference_gradient(batch)])
    encoder = sum(parameter.numel() for parameter in small_task.encoder.parameters())
    torch.testing.assert_close(
        reference, enumerated[:encoder], rtol=1e-4, atol=1e-4 * float(reference.abs().max())
    )


def test_broadcast_codes_take_the_shortcut_with_the_same_values(small_task):
    # The exact estimator passes its codes as a broadcast view; f then decodes each code once. Same values
    # as decoding every (code, image) pair.
    batch = small_task.probe_batch()
    codes = small_task.all_codes()[:, None].expand(4096, len(batch), 4, 8)
    f = small_task.objective(batch)
    with torch.no_grad():
        torch.testing.assert_close(f(codes), f(codes.contiguous()), rtol=1e-5, atol=1e-3)


def test_kl_is_the_kl_to_the_uniform_prior():
    torch.manual_seed(2)
    logits = torch.randn(5, 4, 8)
    q = logits.softmax(-1)
    brute = (q * (q / (1 / 8)).log()).sum((-1, -2))
    torch.testing.assert_close(kl_to_uniform(logits), brute)
    assert kl_to_uniform(torch.zeros(1, 4, 8)).abs().max() < 1e-6


def test_evaluation_is_exact_and_bounded(small_task):
    metrics = small_task.evaluate()
    expected = {"objective", "validation_objective", "test_reconstruction", "test_kl", "test_nll"}
    assert set(metrics) == expected | {"train_negative_elbo"}
    assert metrics["objective"] == pytest.approx(
        metrics["test_reconstruction"] + metrics["test_kl"], rel=1e-6
    )
    assert metrics["test_nll"] <= metrics["objective"] + 1e-4  # −log p(x) ≤ −ELBO
    with torch.no_grad():
        direct = small_task.loss(Exact(), 1, small_task.test_images)  # the generic enumeration agrees
    assert metrics["objective"] == pytest.approx(float(direct), rel=1e-5)


def test_monte_carlo_evaluation_agrees_with_enumeration(small_task):
    # Above 4096 codes the test −ELBO is estimated from eval_samples draws per image; here, where both
    # are possible, the estimate must agree with the exact value within 4 SE (SE from the per-draw spread).
    images = small_task.test_images[:50]
    samples = 400
    small_task.eval_samples = samples
    try:
        with torch.no_grad():
            exact = small_task.enumerated_terms(images)
            sampled = small_task.sampled_terms(images, torch.Generator().manual_seed(3))
            logits = small_task.distribution(images)
            draws = torch.distributions.OneHotCategorical(logits=logits).sample((samples,))
            spread = small_task.objective(images)(draws).std(0).mean()
    finally:
        small_task.eval_samples = 64
    error = float(spread) / math.sqrt(samples * len(images))
    assert abs(float(sampled["elbo"].mean() - exact["elbo"].mean())) < 4 * error
    torch.testing.assert_close(sampled["kl"], exact["kl"])
    assert float(sampled["nll"].mean()) >= float(exact["nll"].mean()) - 4 * error  # IWAE bounds −log p(x)


def test_score_function_is_unbiased_and_straight_through_is_biased(small_task):
    # Must show 2, with the benchmark's own probe (M = 2000 estimates on the fixed probe batch, gradient of
    # the encoder's parameters, reference = the exact enumeration). Unbiased: ‖ḡ − g*‖ is of the size of its
    # noise floor grad_bias_se = √(trace Σ / M), so grad_bias < 4·se. Biased: grad_bias > 10·se.
    ratios = {}
    for name, estimator, samples in [
        ("loo", ScoreFunction("loo"), 2),
        ("gumbel_st", GumbelST(), 1),
        ("st", StraightThrough(), 1),
    ]:
        torch.manual_seed(4)
        stats = probe(small_task, estimator, samples, 2000)
        ratios[name] = stats["grad_bias"] / stats["grad_bias_se"]
    assert ratios["loo"] < 4, ratios
    assert ratios["gumbel_st"] > 10 and ratios["st"] > 10, ratios


def test_bernoulli_latents():
    torch.manual_seed(5)
    task = VAE(latent="bernoulli", hidden=16)
    params = task.distribution(task.probe_batch())
    assert params.shape == (32, 12, 2) and task.codes == 4096 and task.reference == "exact"
    assert torch.equal(params[..., 0], torch.zeros(32, 12))  # (0, ℓ): q(bit = 1) = sigmoid(ℓ)
    assert task.evaluate()["objective"] > 0
    with pytest.raises(ConfigError, match="2 classes"):
        VAE(latent="bernoulli", classes=3)


def test_beyond_4096_codes_the_reference_is_monte_carlo_or_none():
    torch.manual_seed(6)
    assert VAE(classes=16, variables=4, hidden=4).reference == "monte_carlo"  # reference: auto
    task = VAE(classes=16, variables=4, hidden=16, eval_samples=8, reference="none")
    assert task.reference == "none" and task.reference_gradient(task.probe_batch()) is None
    metrics = task.evaluate()
    assert "test_nll_iwae" in metrics and math.isfinite(metrics["objective"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"data": "cifar"}, "task.data"),
        ({"latent": "gaussian"}, "task.latent"),
        ({"variables": 0}, "task.variables"),
        ({"batch_size": 5000}, "task.batch_size"),
    ],
)
def test_bad_settings_are_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        VAE(**settings)


def test_batches_follow_the_seed():
    first, second, other = VAE(hidden=4), VAE(hidden=4), VAE(hidden=4)
    generators = [torch.Generator().manual_seed(seed) for seed in (1, 1, 2)]
    batches = [
        [task.train_batch(step, generator) for step in range(1, 40)]
        for task, generator in zip((first, second, other), generators, strict=True)
    ]
    assert all(torch.equal(a, b) for a, b in zip(batches[0], batches[1], strict=True))
    assert not torch.equal(batches[0][0], batches[2][0])
    assert torch.equal(first.probe_batch(), other.probe_batch())  # the probe batch is the same in every run


# --- MNIST from local files ---------------------------------------------------------------------------------


def idx_bytes(images: np.ndarray) -> bytes:
    count, rows, columns = images.shape
    header = b"".join(value.to_bytes(4, "big") for value in (0x0803, count, rows, columns))
    return header + images.astype(np.uint8).tobytes()


def tiny_mnist(seed: int) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    return generator.integers(0, 256, (40, 28, 28)), generator.integers(0, 256, (10, 28, 28))


def test_mnist_from_idx_files(tmp_path):
    train, test = tiny_mnist(0)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(train)))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(test))
    task = VAE(data="mnist", path=str(tmp_path), hidden=8, batch_size=16, probe_size=8)
    # The last sixth of the training file validates (10,000 of MNIST's 60,000).
    assert task.train_images.shape == (34, 784) and task.validation_images.shape == (6, 784)
    assert task.test_images.shape == (10, 784)
    binary = torch.from_numpy(train.reshape(40, 784) > 127).float()  # static binarization
    assert torch.equal(torch.cat([task.train_images, task.validation_images]), binary)
    assert math.isfinite(task.evaluate()["objective"])


def test_mnist_from_npz(tmp_path):
    train, test = tiny_mnist(1)
    np.savez(tmp_path / "mnist.npz", x_train=train.astype(np.uint8), x_test=test.astype(np.uint8))
    task = VAE(data="mnist", path=str(tmp_path / "mnist.npz"), hidden=8, batch_size=16, probe_size=8)
    assert torch.equal(task.test_images, torch.from_numpy(test.reshape(10, 784) > 127).float())


def test_mnist_problems_are_clear_errors(tmp_path):
    # Missing, with downloads off (tests/conftest.py sets $GRADBENCH_OFFLINE): what to download and where.
    with pytest.raises(ConfigError, match="missing in .*missing.*Download them from https://"):
        VAE(data="mnist", path=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="t10k-images-idx3-ubyte"):
        VAE(data="mnist", path=str(tmp_path))  # an empty directory
    train, test = tiny_mnist(2)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(train)[:-100])  # truncated
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(test))
    with pytest.raises(ConfigError, match="truncated"):
        VAE(data="mnist", path=str(tmp_path))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"not an idx file at all")
    with pytest.raises(ConfigError, match="magic number"):
        VAE(data="mnist", path=str(tmp_path))
    np.savez(tmp_path / "wrong.npz", images=train)
    with pytest.raises(ConfigError, match="x_train"):
        VAE(data="mnist", path=str(tmp_path / "wrong.npz"))


def test_missing_mnist_on_the_command_line(tmp_path):
    result = run_cli(
        "bench", "task.data=mnist", f"task.path={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path}/run"
    )
    assert result.returncode == 2, result.stderr
    assert "Download" in result.stderr and "Traceback" not in result.stderr


# --- runs --------------------------------------------------------------------------------------------------


def test_default_run_is_the_vae_with_gumbel_softmax(config_factory):
    config = config_factory()
    assert (config.task.name, config.estimator.name) == ("vae", "gumbel")


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory) -> dict:
    """Two short runs of the VAE (reinmax, rloo) into one folder; their summaries by estimator."""
    from tests.helpers import make_config

    root = tmp_path_factory.mktemp("vae_runs")
    summaries = {}
    for estimator in ("reinmax", "rloo"):
        config = make_config(
            f"estimator={estimator}",
            "samples=2",
            "steps=10",
            "probe.every=5",
            "probe.draws=4",
            "task.hidden=8",
        )
        summaries[estimator] = run(config, root / estimator)
    return {"root": root, "summaries": summaries}


def test_a_short_run_writes_the_contract(short_runs):
    summary = short_runs["summaries"]["reinmax"]
    assert summary["status"] == "ok" and summary["reference"] == "exact"
    assert math.isfinite(summary["final_loss"]) and math.isfinite(summary["grad_bias"])
    metrics = (short_runs["root"] / "reinmax" / "metrics.csv").read_text()
    assert metrics.count(",objective,") == 3  # probes at steps 0, 5, 10


def test_report_has_the_elbo_section(short_runs):
    from bench.report import write_report

    root = short_runs["root"]
    assert all(summary["status"] == "ok" for summary in short_runs["summaries"].values())
    report = (write_report(root) / "report.md").read_text()
    assert "![vae_elbo.png](vae_elbo.png)" in report and (root / "report" / "vae_elbo.png").is_file()
    section = report[report.index("Held-out ELBO") :]
    assert "| reinmax | 1 |" in section and "| rloo | 1 |" in section and "test −log p(x)" in section
