"""Vector quantization: the VQ estimators against their formulas, the EMA codebook, usage statistics, and
the vqvae task end to end.

- ``vq_st`` (van den Oord et al. 2017): ∂L/∂z_e = ∂L/∂z_q, nothing to the codebook through f.
- ``vq_rotation`` (Fifty et al. 2024): ∂L/∂z_e = λ Rᵀ g with R the rotation taking z_e/‖z_e‖ to e_k/‖e_k‖
  and λ = ‖e_k‖/‖z_e‖; checked on vectors where R is a 90° rotation by hand, and as the identity when z_e
  and e_k are parallel with equal norm.
- ``EMACodebook`` (van den Oord et al. 2017, A.1, with Laplace smoothing): one update by hand.
- ``vq_stochastic`` reuses the categorical estimators: wrapped around ``exact`` it is the exact gradient of
  Σ_k softmax(−‖z_e − e_k‖²/τ)_k f(e_k).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.formats.errors import ConfigError
from bench.run.build import estimators_for
from bench.run.runner import run
from bench.tasks.vqvae import VQVAE
from estimators.base import EstimatorError
from estimators.codebook import (
    Codebook,
    EMACodebook,
    FiniteScalarQuantizer,
    code_usage,
    squared_distances,
    vq_losses,
)
from estimators.exact import Exact
from estimators.gumbel_st import GumbelST
from estimators.reparam import Reparam
from estimators.vq_rotation import VQRotation, rotate_to
from estimators.vq_st import VQStraightThrough
from estimators.vq_stochastic import StochasticVQ


def gradient_to_z_e(estimator, z_e: torch.Tensor, codebook: torch.Tensor, upstream: torch.Tensor):
    """(value, ∂/∂z_e, ∂/∂codebook) of the surrogate with f(z) = Σ upstream · z (so ∂L/∂z_q = upstream)."""
    z_e = z_e.clone().requires_grad_(True)
    codebook = codebook.clone().requires_grad_(True)
    value = estimator(Codebook(z_e, codebook), lambda z: (z * upstream).sum(-1), 1)
    value.sum().backward()
    return value.detach(), z_e.grad, codebook.grad


# -- vq_st -----------------------------------------------------------------------------------------------


def test_vq_st_forward_is_the_nearest_code_and_gradient_is_copied_unchanged():
    generator = torch.Generator().manual_seed(0)
    z_e = torch.randn(5, 3, 4, generator=generator)
    codebook = torch.randn(7, 4, generator=generator)
    upstream = torch.randn(5, 3, 4, generator=generator)
    value, grad_z_e, grad_codebook = gradient_to_z_e(VQStraightThrough(), z_e, codebook, upstream)
    nearest = torch.cdist(z_e.reshape(-1, 4), codebook).argmin(-1).reshape(5, 3)
    torch.testing.assert_close(value, (codebook[nearest] * upstream).sum(-1))
    torch.testing.assert_close(grad_z_e, upstream)
    assert grad_codebook is None or torch.count_nonzero(grad_codebook) == 0


# -- vq_rotation ---------------------------------------------------------------------------------------------


def test_vq_rotation_gradient_by_hand_in_two_dimensions():
    # z_e = (1, 0), e_k = (0, 2): R is the rotation by +90° (R ê = q̂), λ = 2, so for g = (g_x, g_y)
    # λ Rᵀ g = 2 (g_y, −g_x).
    z_e = torch.tensor([[1.0, 0.0]])
    codebook = torch.tensor([[0.0, 2.0], [-5.0, -5.0]])
    for upstream, expected in [
        ((1.0, 0.0), (0.0, -2.0)),
        ((0.0, 1.0), (2.0, 0.0)),
        ((3.0, -1.0), (-2.0, -6.0)),
    ]:
        value, grad_z_e, grad_codebook = gradient_to_z_e(
            VQRotation(), z_e, codebook, torch.tensor([upstream])
        )
        torch.testing.assert_close(value, torch.tensor([2.0 * upstream[1]]))
        torch.testing.assert_close(grad_z_e, torch.tensor([expected]))
        assert grad_codebook is None or torch.count_nonzero(grad_codebook) == 0


def test_vq_rotation_gradient_by_hand_in_three_dimensions():
    # z_e = (0, 0, 3), e_k = (1, 0, 0): λ = 1/3; R rotates the z axis onto the x axis within the x–z plane
    # (R e_z = e_x, R e_x = −e_z) and leaves y alone, so Rᵀ g = (−g_z, g_y, g_x).
    z_e = torch.tensor([[0.0, 0.0, 3.0]])
    codebook = torch.tensor([[1.0, 0.0, 0.0], [-9.0, 0.0, 0.0]])
    upstream = torch.tensor([[0.5, -2.0, 4.0]])
    _, grad_z_e, _ = gradient_to_z_e(VQRotation(), z_e, codebook, upstream)
    torch.testing.assert_close(grad_z_e, torch.tensor([[-4.0, -2.0, 0.5]]) / 3)


def test_vq_rotation_is_the_identity_for_parallel_vectors_of_equal_norm_and_a_rescale_if_norms_differ():
    upstream = torch.tensor([[0.7, -1.1, 0.2], [0.3, 0.9, -2.0]])
    z_e = torch.tensor([[0.3, -0.4, 1.2], [1.0, 2.0, 2.0]])
    codebook = torch.tensor([[0.3, -0.4, 1.2], [1.5, 3.0, 3.0]])  # e_0 = z_e[0]; e_1 = 1.5 z_e[1]
    _, rotation_grad, _ = gradient_to_z_e(VQRotation(), z_e, codebook, upstream)
    _, straight_grad, _ = gradient_to_z_e(VQStraightThrough(), z_e, codebook, upstream)
    torch.testing.assert_close(rotation_grad[0], straight_grad[0])
    torch.testing.assert_close(rotation_grad[1], 1.5 * straight_grad[1])


def test_rotate_to_maps_z_e_onto_the_code_with_an_orthogonal_map_times_lambda():
    generator = torch.Generator().manual_seed(1)
    z_e = torch.randn(50, 6, generator=generator, requires_grad=True)
    target = torch.randn(50, 6, generator=generator)
    upstream = torch.randn(50, 6, generator=generator)
    rotated = rotate_to(z_e, target)
    torch.testing.assert_close(rotated, target)
    (gradient,) = torch.autograd.grad((rotated * upstream).sum(), z_e)
    scale = target.norm(dim=-1) / z_e.detach().norm(dim=-1)
    # λ Rᵀ with R orthogonal: the norm is scaled by λ ...
    torch.testing.assert_close(gradient.norm(dim=-1), scale * upstream.norm(dim=-1))
    # ... and the angle between g and e_k is that between the returned gradient and z_e (Fifty et al. §4.1).
    cosine = torch.nn.functional.cosine_similarity
    torch.testing.assert_close(cosine(gradient, z_e.detach(), dim=-1), cosine(upstream, target, dim=-1))


def test_rotate_to_stays_finite_for_a_zero_encoder_output_and_opposite_vectors():
    z_e = torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    target = torch.tensor([[1.0, 1.0], [-2.0, 0.0]])
    rotated = rotate_to(z_e, target)
    (gradient,) = torch.autograd.grad(rotated.sum(), z_e)
    assert torch.isfinite(rotated).all() and torch.isfinite(gradient).all()
    torch.testing.assert_close(rotated[1], target[1])


# -- codebook losses, EMA, usage ---------------------------------------------------------------------------


def test_vq_losses_values_and_which_tensor_each_trains():
    z_e = torch.tensor([[0.0, 1.0], [2.0, 2.0]], requires_grad=True)
    codebook = torch.tensor([[0.0, 0.0], [3.0, 3.0]], requires_grad=True)
    codebook_loss, commitment_loss = vq_losses(Codebook(z_e, codebook))
    torch.testing.assert_close(codebook_loss.detach(), torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(commitment_loss.detach(), torch.tensor([1.0, 2.0]))
    assert torch.autograd.grad(codebook_loss.sum(), z_e, allow_unused=True)[0] is None
    assert torch.autograd.grad(commitment_loss.sum(), codebook, allow_unused=True)[0] is None
    (to_codes,) = torch.autograd.grad(codebook_loss.sum(), codebook)
    torch.testing.assert_close(to_codes, torch.tensor([[0.0, -2.0], [2.0, 2.0]]))  # 2 (e_k − z_e)


def test_squared_distances_match_cdist():
    generator = torch.Generator().manual_seed(2)
    z_e, codebook = torch.randn(4, 3, 5, generator=generator), torch.randn(9, 5, generator=generator)
    torch.testing.assert_close(squared_distances(z_e, codebook), torch.cdist(z_e, codebook) ** 2)


def test_ema_codebook_update_matches_the_formula_by_hand():
    # K = 3 codes in d = 1, decay γ = 0.5. State before: N = (1, 1, 1), m = e = (0, 1, 5).
    # Batch z = (0.2, 0.4, 1.6) assigned to codes (0, 0, 1): n = (2, 1, 0), s = (0.6, 1.6, 0).
    # N ← 0.5·1 + 0.5·n = (1.5, 1.0, 0.5);  m ← 0.5·m + 0.5·s = (0.3, 1.3, 2.5).
    # Laplace: Ñ_k = (N_k + ε)/(ΣN + 3ε)·ΣN with ΣN = 3;  e_k = m_k / Ñ_k.
    epsilon = 1e-3
    ema = EMACodebook(codes=3, dim=1, decay=0.5, epsilon=epsilon)
    ema.reset(torch.tensor([[0.0], [1.0], [5.0]]))
    ema.update(torch.tensor([[0.2], [0.4], [1.6]]), torch.tensor([0, 0, 1]))
    counts = torch.tensor([1.5, 1.0, 0.5])
    sums = torch.tensor([0.3, 1.3, 2.5])
    smoothed = (counts + epsilon) / (3.0 + 3 * epsilon) * 3.0
    torch.testing.assert_close(ema.counts, counts)
    torch.testing.assert_close(ema.sums.squeeze(-1), sums)
    torch.testing.assert_close(ema.codebook.squeeze(-1), sums / smoothed)
    # Without smoothing: 0.2 (mean of its two vectors, half-way from 0), 1.3, and 5 (unused: not moved).
    torch.testing.assert_close(ema.codebook.squeeze(-1), torch.tensor([0.2, 1.3, 5.0]), atol=1e-2, rtol=0)


def test_ema_codebook_converges_to_the_cluster_means():
    ema = EMACodebook(codes=2, dim=2, decay=0.9)
    ema.reset(torch.zeros(2, 2))
    points = torch.tensor([[1.0, 1.0], [3.0, 1.0], [-2.0, 0.0], [-4.0, 2.0]])
    for _ in range(300):
        ema.update(points, torch.tensor([0, 0, 1, 1]))
    torch.testing.assert_close(ema.codebook, torch.tensor([[2.0, 1.0], [-3.0, 1.0]]), atol=1e-4, rtol=0)


def test_ema_codebook_refuses_a_decay_outside_the_unit_interval():
    with pytest.raises(EstimatorError, match="decay"):
        EMACodebook(codes=2, dim=2, decay=1.0)


def test_code_usage_perplexity_and_fraction_used():
    uniform = code_usage(torch.arange(8).repeat(3), codes=8)
    assert uniform["perplexity"] == pytest.approx(8.0) and uniform["codes_used"] == 1.0
    assert uniform["unused_codes"] == 0
    single = code_usage(torch.full((10,), 3), codes=8)
    assert single["perplexity"] == pytest.approx(1.0) and single["codes_used"] == 1 / 8
    assert single["unused_codes"] == 7
    two = code_usage(torch.tensor([0, 0, 0, 1]), codes=4)  # p = (3/4, 1/4)
    assert two["perplexity"] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))


# -- vq_stochastic -------------------------------------------------------------------------------------------


def test_vq_stochastic_around_exact_is_the_exact_gradient_of_the_softmax_objective():
    generator = torch.Generator().manual_seed(3)
    z_e = torch.randn(2, 3, generator=generator, requires_grad=True)
    codebook = torch.randn(4, 3, generator=generator, requires_grad=True)
    weights = torch.randn(3, generator=generator)
    tau = 0.7

    def f(z):  # per latent vector: a nonlinear function of the code
        return torch.sin(z @ weights) + (z**2).sum(-1)

    surrogate = StochasticVQ(Exact(), tau=tau)(Codebook(z_e, codebook), f, 1)
    probabilities = (-(torch.cdist(z_e, codebook) ** 2) / tau).softmax(-1)
    expected = (probabilities * f(codebook)).sum(-1)
    torch.testing.assert_close(surrogate, expected)
    got = torch.autograd.grad(surrogate.sum(), [z_e, codebook])
    want = torch.autograd.grad(expected.sum(), [z_e, codebook])
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)


def test_vq_stochastic_at_low_temperature_samples_the_nearest_code():
    generator = torch.Generator().manual_seed(4)
    z_e = torch.randn(20, 3, generator=generator)
    codebook = torch.randn(6, 3, generator=generator)
    upstream = torch.randn(20, 3, generator=generator)
    value, _, _ = gradient_to_z_e(StochasticVQ(GumbelST(), tau=1e-6), z_e, codebook, upstream)
    nearest = torch.cdist(z_e, codebook).argmin(-1)
    torch.testing.assert_close(value, (codebook[nearest] * upstream).sum(-1))


def test_vq_stochastic_refuses_an_estimator_for_other_latents_and_forwards_on_step():
    with pytest.raises(EstimatorError, match="categorical"):
        StochasticVQ(Reparam())
    inner = GumbelST(tau=1.0, tau_min=0.5, anneal_rate=0.1, anneal_every=1)
    wrapped = StochasticVQ(inner)
    reported = wrapped.on_step(5)
    assert inner.tau == pytest.approx(max(0.5, math.exp(-0.5)))
    assert reported == {"categorical_tau": inner.tau}


# -- the vqvae task ------------------------------------------------------------------------------------------


def test_codebook_estimators_are_listed_for_the_codebook_latent():
    assert set(estimators_for("codebook")) >= {"vq_st", "vq_rotation", "vq_stochastic"}
    assert "vq_st" not in estimators_for("categorical")


@pytest.mark.parametrize("codebook_update", ["loss", "ema"])
def test_vqvae_codebook_is_trained_by_the_chosen_rule(codebook_update):
    torch.manual_seed(0)
    task = VQVAE(codebook_update=codebook_update, codes=8, latents=2, dim=3, hidden=16, batch_size=16)
    parameter_names = {name for name, _ in task.named_parameters()}
    assert ("embedding" in parameter_names) == (codebook_update == "loss")
    batch = task.train_batch(1)
    before = task.codebook.detach().clone()
    loss = task.loss(VQStraightThrough(), 1, batch)
    loss.backward()
    if codebook_update == "loss":
        assert task.embedding.grad is not None and task.embedding.grad.abs().sum() > 0
    metrics = task.after_step(1, batch)
    assert set(metrics) == {
        "train_reconstruction",
        "train_quantization_error",
        "train_perplexity",
        "train_codes_used",
    }
    moved = not torch.equal(task.codebook, before)
    # EMA moves the codes in after_step; the loss rule moves them in the optimizer step (not run here).
    assert moved == (codebook_update == "ema")


def test_vqvae_evaluate_reports_the_usage_metrics_consistently():
    torch.manual_seed(0)
    task = VQVAE(codes=16)
    metrics = task.evaluate()
    expected = {"objective", "validation_objective", "quantization_error", "perplexity", "codes_used"}
    assert set(metrics) == expected | {"dead_codes"}
    assert 1.0 <= metrics["perplexity"] <= 16 and 0 < metrics["codes_used"] <= 1
    _, index, _ = task.quantize(task.train_images)
    assert metrics["dead_codes"] == 16 - len(index.unique())


def test_vqvae_probe_batches_are_fresh_training_batches():
    torch.manual_seed(0)
    task = VQVAE(batch_size=32)
    batches = task.probe_batches(3)
    assert len(batches) == 3 and all(batch.shape == (32, 64) for batch in batches)
    assert not torch.equal(batches[0], batches[1])


@pytest.mark.parametrize(
    "setting",
    [
        "task.codebook_update=adam",
        "task.codes=1",
        "task.decay=1.5",
        "task.beta=-1",
        "task.data=cifar",
        "task.codebook_init=kmeans",
    ],
)
def test_vqvae_bad_settings_are_config_errors(config_factory, tmp_path, setting):
    with pytest.raises(ConfigError):
        run(config_factory("task=vqvae", "estimator=vq_st", setting), tmp_path)


@pytest.mark.parametrize("estimator", ["vq_st", "vq_rotation", "vq_stochastic"])
def test_vqvae_runs_end_to_end_without_a_reference(config_factory, tmp_path, estimator):
    settings = [
        "task=vqvae",
        f"estimator={estimator}",
        "steps=10",
        "log_every=5",
        "probe.every=5",
        "probe.draws=4",
    ]
    summary = run(config_factory(*settings), tmp_path)
    assert summary["status"] == "ok", summary["error"]
    assert summary["reference"] == "none"
    assert all(math.isnan(summary[key]) for key in ("grad_bias", "grad_bias_sq", "grad_mse", "grad_cos"))
    # The M draws see different data batches, so even the deterministic quantizers have a spread.
    assert summary["grad_variance"] > 0
    assert math.isfinite(summary["final_loss"])


def test_vqvae_reads_mnist_from_a_local_npz_and_explains_a_missing_file(tmp_path):
    generator = torch.Generator().manual_seed(5)
    images = (torch.rand(60, 28, 28, generator=generator) * 255).to(torch.uint8).numpy()
    path = tmp_path / "mnist.npz"
    import numpy as np

    np.savez(path, x_train=images[:40], x_test=images[40:])
    torch.manual_seed(0)
    task = VQVAE(data="mnist", path=str(path), batch_size=16, codes=8)
    assert task.train_images.shape == (34, 784) and task.validation_images.shape == (6, 784)
    assert set(task.train_images.unique().tolist()) <= {0.0, 1.0}
    task.loss(VQRotation(), 1, task.train_batch(1)).backward()
    assert math.isfinite(task.evaluate()["objective"])
    with pytest.raises(ConfigError, match="mnist"):
        VQVAE(data="mnist", path=str(tmp_path / "missing.npz"))


def test_vqvae_data_initialization_puts_every_code_on_an_encoder_output():
    torch.manual_seed(0)
    task = VQVAE(codebook_init="data", codes=16)
    # The encoder has not moved since initialization, so each code is one of the training z_e exactly.
    z_e = task.encode(task.train_images).reshape(-1, task.dim).detach()
    distances = torch.cdist(task.codebook.detach(), z_e, compute_mode="donot_use_mm_for_euclid_dist")
    distances = distances.min(-1).values
    assert distances.max() < 1e-5 and len(task.codebook.unique(dim=0)) == 16


def test_report_has_a_codebook_section_and_no_bias_for_vqvae(config_factory, tmp_path):
    from bench.report import write_report

    for estimator in ("vq_st", "vq_rotation"):
        settings = ["task=vqvae", f"estimator={estimator}", "steps=10", "probe.every=5", "probe.draws=2"]
        summary = run(config_factory(*settings), tmp_path / estimator)
        assert summary["status"] == "ok", summary["error"]
    report = (write_report(tmp_path) / "report.md").read_text()
    assert "no reference gradient" in report
    assert "Codebook at the end of training" in report and "vqvae_codebook.png" in report
    assert (tmp_path / "report" / "vqvae_codebook.png").stat().st_size > 0
    header = next(line for line in report.splitlines() if line.startswith("| estimator | seeds | final_loss"))
    assert "grad_bias" not in header and "grad_cos" not in header


def test_stochastic_vq_is_as_unbiased_as_the_estimator_it_wraps():
    from estimators import GumbelST, ScoreFunction, StochasticVQ

    assert StochasticVQ(GumbelST()).unbiased is False
    assert StochasticVQ(ScoreFunction("loo")).unbiased is True


# -- SimVQ's linear codebook and finite scalar quantization --------------------------------------------------


def test_simvq_codebook_is_a_frozen_basis_through_a_linear_map_trained_by_the_codebook_loss():
    torch.manual_seed(0)
    task = VQVAE(codebook_update="linear", codes=8, latents=2, dim=3, hidden=16, batch_size=16)
    layer = task.linear_codebook.linear
    basis = task.linear_codebook.basis
    torch.testing.assert_close(task.codebook, basis @ layer.weight.T + layer.bias)  # C = E Wᵀ + b
    assert not basis.requires_grad and "linear_codebook.basis" not in dict(task.named_parameters())
    assert basis.std().item() == pytest.approx(3**-0.5, rel=0.5)  # E ~ N(0, 1/d), as SimVQ's code
    task.loss(VQStraightThrough(), 1, task.train_batch(1)).backward()
    assert layer.weight.grad.abs().sum() > 0 and layer.bias.grad.abs().sum() > 0  # the codebook loss trains W
    # The codebook loss alone, by hand: ‖sg[z_e] − C_k‖² summed over the P vectors, mean over the batch.
    batch = task.train_batch(2)
    params = task.distribution(batch)
    code = task.codebook[params.nearest()]
    expected = ((params.z_e.detach() - code) ** 2).sum(-1).sum(-1).mean() + task.beta * (
        (params.z_e - code.detach()) ** 2
    ).sum(-1).sum(-1).mean()
    torch.testing.assert_close(task.deterministic(params, batch), expected)


def fsq_reference(z: np.ndarray, levels: list[int]) -> np.ndarray:
    """The FSQ paper's reference code (Mentzer et al. 2024, fsq.ipynb) in numpy: bound, round, renormalize."""
    levels_array = np.asarray(levels, dtype=np.float64)
    half_l = (levels_array - 1) * (1 - 1e-3) / 2
    offset = np.where(levels_array % 2 == 1, 0.0, 0.5)
    shift = np.tan(offset / half_l)
    bounded = np.tanh(z + shift) * half_l - offset
    return np.round(bounded) / (levels_array // 2)


@pytest.mark.parametrize("levels", [[4, 4, 4], [8, 5, 5, 5], [3, 2]])
def test_fsq_quantizes_as_the_reference_code_and_its_nearest_code_is_the_rounding(levels):
    quantizer = FiniteScalarQuantizer(levels)
    z = torch.randn(2000, len(levels), generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    bounded = quantizer.double().bound(z)
    grid = quantizer.codebook().double()
    assert grid.shape == (math.prod(levels), len(levels)) and len(grid.unique(dim=0)) == math.prod(levels)
    for axis, level in enumerate(levels):  # each coordinate takes exactly L_i values
        assert len(grid[:, axis].unique()) == level
    nearest = Codebook(bounded, grid).nearest()
    np.testing.assert_allclose(grid[nearest].numpy(), fsq_reference(z.numpy(), levels), atol=1e-12)
    assert torch.equal(quantizer.index(grid[nearest]), nearest)  # the mixed-radix number of each code
    # vq_st on FSQ's codebook latent is FSQ's straight-through rounding: the value is the grid point, the
    # gradient reaching z is bound'(z)·g.
    leaf = z[:5].clone().requires_grad_(True)
    upstream = torch.randn(5, len(levels), dtype=torch.float64)
    value = VQStraightThrough()(Codebook(quantizer.bound(leaf), grid), lambda q: (q * upstream).sum(-1), 1)
    value.sum().backward()
    slope = (1 - torch.tanh(z[:5] + quantizer.shift) ** 2) * quantizer.half_range / quantizer.width
    torch.testing.assert_close(leaf.grad, upstream * slope)


def test_fsq_refuses_a_level_below_two():
    with pytest.raises(EstimatorError, match="levels"):
        FiniteScalarQuantizer([4, 1])


def test_vqvae_with_fsq_has_no_codebook_loss_and_counts_usage_over_its_grid():
    torch.manual_seed(0)
    task = VQVAE(codebook_update="fsq", levels=[3, 3], latents=2, hidden=16, batch_size=16)
    assert task.codes == 9 and task.codebook.shape == (9, 2)
    assert not any("embedding" in name or "codebook" in name for name, _ in task.named_parameters())
    batch = task.train_batch(1)
    params = task.distribution(batch)
    assert params.z_e.shape == (16, 2, 2) and params.z_e.abs().max() <= 1
    assert task.deterministic(params, batch) == 0
    metrics = task.evaluate()
    _, index, _ = task.quantize(task.test_images)
    assert metrics["codes_used"] == len(index.unique()) / 9 and 1 <= metrics["perplexity"] <= 9


@pytest.mark.parametrize("codebook_update", ["linear", "fsq"])
def test_vqvae_refuses_a_data_initialization_without_a_learned_codebook(codebook_update):
    with pytest.raises(ConfigError, match="codebook_init"):
        VQVAE(codebook_update=codebook_update, codebook_init="data")
