"""The vectorized gradient probe (torch.func) against the per-draw loop it replaces.

Exactness is checked where the draws are deterministic (the `exact` estimator: every draw is the same
number, so both paths must agree to float precision, through an encoder, a deterministic term and a
decoder). For random estimators the two paths use different noise, so they are compared statistically at a
fixed seed with tolerances derived from the standard error:

- the mean gradient, per coordinate j: |ḡ_loop,j − ḡ_vec,j| ≤ 4·√(s²_loop,j/M + s²_vec,j/M) (the standard
  error of a difference of two independent means);
- ``grad_variance`` V = 1/(M−1) Σ_m ‖ĝ_m − ḡ‖²: its standard error is estimated from the spread of the
  per-draw terms ‖ĝ_m − ḡ‖² as sd/√M, and the two paths must agree within 4·√(SE_loop² + SE_vec²).

A negative control shows the same checks reject draws that really differ.
"""

from __future__ import annotations

import logging
import math
from statistics import NormalDist

import pytest
import torch
from torch import Tensor, nn

import bench.run.probe.vectorize as probe_module
from bench.formats.errors import ConfigError
from bench.run.probe import (
    draw_gradients,
    draw_gradients_vectorized,
    gradient_statistics,
    probe,
    split_parameters,
    vectorization_blocker,
    vectorize_mode,
)
from bench.run.runner import run
from bench.tasks.base import Task
from bench.tasks.gaussian import GaussianTask
from bench.tasks.toy import Toy
from estimators.base import Estimator
from estimators.exact import Exact
from estimators.gumbel import Gumbel
from estimators.gumbel_st import GumbelST
from estimators.reparam import Reparam
from estimators.score_function import ScoreFunction
from estimators.st import StraightThrough

DRAWS = 800
STANDARD_ERRORS = 4.0


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def flat_reference(task: Task) -> Tensor:
    return torch.cat([gradient.reshape(-1) for gradient in task.reference_gradient(None)])


def variance_and_standard_error(gradients: Tensor) -> tuple[float, float]:
    """grad_variance and its standard error from the per-draw terms ‖ĝ_m − ḡ‖² (see the module docstring)."""
    gradients = gradients.double()
    draws = gradients.shape[0]
    terms = ((gradients - gradients.mean(0)) ** 2).sum(1) * draws / (draws - 1)
    return float(terms.mean()), float(terms.std() / math.sqrt(draws))


def disagreements(first: Tensor, second: Tensor) -> list[str]:
    """What differs between two sets of draws by more than STANDARD_ERRORS standard errors (empty: agree).

    With P coordinates the per-coordinate threshold grows (Bonferroni) so that the chance of a false alarm
    over all of them stays that of one 4-SE test; a float32 rounding floor (1e-5 of the largest mean
    entry) covers coordinates whose draws do not vary at all.
    """
    problems = []
    draws_first, draws_second = first.shape[0], second.shape[0]
    first, second = first.double(), second.double()
    difference = first.mean(0) - second.mean(0)
    standard_error = (first.var(0) / draws_first + second.var(0) / draws_second).sqrt()
    false_alarm = 2 * NormalDist().cdf(-STANDARD_ERRORS)
    threshold = max(STANDARD_ERRORS, -NormalDist().inv_cdf(false_alarm / 2 / difference.numel()))
    rounding = 1e-5 * float(first.mean(0).abs().max()) + 1e-12
    for index, (gap, error) in enumerate(zip(difference.tolist(), standard_error.tolist(), strict=True)):
        if abs(gap) > threshold * error + rounding:
            problems.append(
                f"mean coordinate {index}: difference {gap:.4g} > {threshold:.2f} x SE {error:.3g}"
            )
    (variance_first, se_first), (variance_second, se_second) = (
        variance_and_standard_error(first),
        variance_and_standard_error(second),
    )
    allowed = STANDARD_ERRORS * math.hypot(se_first, se_second)
    if abs(variance_first - variance_second) > allowed + 1e-5 * max(variance_first, variance_second) + 1e-12:
        problems.append(
            f"grad_variance {variance_first:.4g} vs {variance_second:.4g}: differ by more than {allowed:.3g} "
            f"({STANDARD_ERRORS} x the SE of the difference)"
        )
    return problems


CASES = {
    "toy/score_function": (lambda: Toy(), lambda: ScoreFunction(), 1),
    "toy/rloo": (lambda: Toy(dim=2), lambda: ScoreFunction(baseline="loo"), 2),
    "toy/st_3_classes": (lambda: Toy(dim=3, classes=3, init=0.3), lambda: StraightThrough(tau=0.5), 1),
    "toy/gumbel": (lambda: Toy(dim=2), lambda: Gumbel(tau=0.5), 2),
    "toy/gumbel_st": (lambda: Toy(), lambda: GumbelST(tau=1.0), 1),
    "gaussian/reparam_square": (lambda: GaussianTask(dim=2), lambda: Reparam(), 1),
    "gaussian/score_function_cos": (lambda: GaussianTask(dim=2, f="cos", k=2.0), lambda: ScoreFunction(), 2),
    "gaussian/reparam_exp": (lambda: GaussianTask(f="exp", mu0=0.5), lambda: Reparam(), 1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_vectorized_and_loop_probes_agree_statistically(case: str) -> None:
    make_task, make_estimator, samples = CASES[case]
    torch.manual_seed(0)
    task, estimator = make_task(), make_estimator()
    loop = draw_gradients(task, estimator, samples, None, DRAWS)
    vectorized = draw_gradients_vectorized(task, estimator, samples, None, DRAWS)
    assert vectorized.shape == loop.shape
    problems = disagreements(loop, vectorized)
    assert not problems, f"{case}: loop and vectorized probes disagree: {problems}"
    assert variance_and_standard_error(vectorized)[0] > 0, "every vectorized draw got the same noise"
    if estimator.unbiased:  # and the vectorized draws target the true gradient
        error = vectorized.double().mean(0) - flat_reference(task).double()
        standard_error = (vectorized.double().var(0) / DRAWS).sqrt()
        assert (error.abs() <= STANDARD_ERRORS * standard_error).all(), (error, standard_error)


def test_the_agreement_check_rejects_draws_that_differ() -> None:
    """Negative control: the checks above have the power to see a real difference at M = 800."""
    torch.manual_seed(1)
    task = Toy(dim=2)
    plain = draw_gradients_vectorized(task, ScoreFunction(), 2, None, DRAWS)
    leave_one_out = draw_gradients_vectorized(task, ScoreFunction(baseline="loo"), 2, None, DRAWS)
    assert any("grad_variance" in problem for problem in disagreements(plain, leave_one_out))
    # At p(b = 1) = sigmoid(1) the straight-through mean is 2(p − t)·p(1 − p) ≈ 0.11, the true gradient
    # p(1 − p)(1 − 2t) ≈ 0.02 (toy docstring): a biased estimator's draws must not pass for unbiased ones.
    task = Toy()
    with torch.no_grad():
        task.logits[:, 1] = 1.0
    unbiased = draw_gradients_vectorized(task, ScoreFunction(), 1, None, DRAWS)
    biased = draw_gradients_vectorized(task, StraightThrough(), 1, None, DRAWS)
    assert any("mean" in problem for problem in disagreements(unbiased, biased))


class EncoderTask(Task):
    """A small amortized model: encoder → logits (B, L, C), decoder inside f, a KL term outside it.

    With ``probe_decoder`` the decoder's weight is probed as well, which f reads directly (not through the
    distribution parameters): the vectorized path must differentiate it through ``functional_call``.
    """

    latent = "categorical"

    def __init__(self, probe_decoder: bool = False) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.encoder = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2 * 3))
        self.decoder = nn.Linear(2 * 3, 5)
        self.register_buffer("data", torch.randn(4, 5, generator=generator))
        self.probe_decoder = probe_decoder

    def probe_batch(self) -> Tensor:
        return self.data

    def distribution(self, batch: Tensor) -> Tensor:
        return self.encoder(batch).unflatten(-1, (2, 3))

    def objective(self, batch: Tensor):
        return lambda z: ((self.decoder(z.flatten(-2)) - batch) ** 2).sum(-1)

    def deterministic(self, params: Tensor, batch: Tensor) -> Tensor:
        log_q = params.log_softmax(-1)
        return (log_q.exp() * log_q).sum((-1, -2)).mean()

    def probed_parameters(self) -> dict[str, Tensor]:
        probed = dict(self.encoder.named_parameters())
        return {**probed, "decoder.weight": self.decoder.weight} if self.probe_decoder else probed


@pytest.mark.parametrize("probe_decoder", [False, True])
def test_vectorized_equals_loop_exactly_through_an_encoder(probe_decoder: bool) -> None:
    """Deterministic draws (`exact`): the encoder VJP, the KL term and the decoder path match to 1e-5."""
    torch.manual_seed(0)
    task = EncoderTask(probe_decoder)
    batch = task.probe_batch()
    loop = draw_gradients(task, Exact(), 1, batch, 3)
    vectorized = draw_gradients_vectorized(task, Exact(), 1, batch, 3)
    torch.testing.assert_close(vectorized, loop, rtol=1e-5, atol=1e-6)
    assert loop.abs().max() > 1e-3  # not a comparison of zeros


def test_vectorized_and_loop_agree_statistically_through_an_encoder() -> None:
    torch.manual_seed(2)
    task = EncoderTask(probe_decoder=True)
    batch = task.probe_batch()
    loop = draw_gradients(task, ScoreFunction(baseline="loo"), 2, batch, 600)
    vectorized = draw_gradients_vectorized(task, ScoreFunction(baseline="loo"), 2, batch, 600)
    assert not disagreements(loop, vectorized)


@pytest.mark.parametrize("estimator", ["gumbel", "st", "rloo"])
def test_vectorized_equals_loop_draw_by_draw_on_the_vae_with_the_same_noise(estimator: str) -> None:
    """With pre-drawn noise (common random numbers) both paths compute the same M estimates: the VAE's encoder
    VJP, the relaxed samples (estimators.base.softmax under vmap), the decoder and the KL term agree draw by
    draw to float32 rounding (atol 1e-6 of the largest entry: a few eps). Other noise differs far more."""
    from bench.run.probe.draws import deterministic_gradient, probe_targets, vectorized_draws
    from bench.tasks.vae import VAE
    from estimators.base import draw_noise

    torch.manual_seed(0)
    task = VAE()
    chosen, samples = {
        "gumbel": (Gumbel(tau=0.5), 2),
        "st": (StraightThrough(), 1),
        "rloo": (ScoreFunction(baseline="loo"), 2),
    }[estimator]
    batch = task.probe_batch()
    with torch.no_grad():
        params = task.distribution(batch)
    noise, other = (draw_noise(params, samples, 12, torch.Generator().manual_seed(seed)) for seed in (1, 2))
    loop = draw_gradients(task, chosen, samples, batch, 12, noise=noise)
    targets = probe_targets(task, batch)
    vectorized = vectorized_draws(task, chosen, samples, batch, 12, targets=targets, noise=noise)
    tolerance = 1e-6 * float(loop.abs().max())
    assert torch.allclose(vectorized.gradients, loop, rtol=1e-5, atol=tolerance)
    different = draw_gradients_vectorized(task, chosen, samples, batch, 12, noise=other)
    assert (different - loop).abs().max() > 1e3 * tolerance  # the check can fail
    assert torch.equal(vectorized.deterministic, deterministic_gradient(task, batch, targets))


def test_ema_baseline_is_read_not_updated_by_a_vectorized_probe() -> None:
    torch.manual_seed(0)
    task, estimator = Toy(), ScoreFunction(baseline="ema")
    for _ in range(3):  # give the baseline some state, in training mode
        task.loss(estimator, 1).backward()
    state = {name: buffer.clone() for name, buffer in estimator.named_buffers()}
    draw_gradients_vectorized(task, estimator, 1, None, 64)
    assert estimator.training
    for name, buffer in estimator.named_buffers():
        assert torch.equal(buffer, state[name]), name


# --- probe(): choosing the path ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_fallback_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe_module, "runtime_blockers", {})
    monkeypatch.setattr(probe_module, "reported_fallbacks", set())


class OptedOut(StraightThrough):
    vectorizable = False
    vectorizable_reason = "a test estimator that says no"


class ReadsItem(StraightThrough):
    """Calls .item() on a sample, which torch.func.vmap cannot batch: fails only at run time."""

    def forward(self, logits: Tensor, f, samples: int = 1) -> Tensor:
        surrogate = super().forward(logits, f, samples)
        return surrogate * (1.0 if surrogate.sum().item() < 1e9 else 0.0)


class OwnLoss(Toy):
    def loss(self, estimator: Estimator, samples: int, batch=None) -> Tensor:
        return super().loss(estimator, samples, batch)


def test_auto_vectorizes_toy_and_false_uses_the_loop() -> None:
    torch.manual_seed(0)
    stats = probe(Toy(), Gumbel(), 1, 32, "auto")
    assert stats["probe_vectorized"] == 1.0
    # No speed is asserted here (python -m bench.perf measures speed), only that the time is recorded.
    assert stats["probe_time_ms"] > 0
    assert probe(Toy(), Gumbel(), 1, 32, False)["probe_vectorized"] == 0.0
    assert probe(GaussianTask(), Reparam(), 1, 32, True)["probe_vectorized"] == 1.0


def test_declared_opt_out_falls_back_once_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    task, estimator = Toy(), OptedOut()
    with caplog.at_level(logging.INFO, logger="bench.run.probe"):
        first = probe(task, estimator, 1, 16)
        probe(task, estimator, 1, 16)
    assert first["probe_vectorized"] == 0.0 and math.isfinite(first["grad_variance"])
    messages = [record.getMessage() for record in caplog.records if "per-draw loop" in record.getMessage()]
    assert len(messages) == 1 and "a test estimator that says no" in messages[0], messages
    with pytest.raises(ConfigError, match="a test estimator that says no"):
        probe(task, estimator, 1, 16, "true")


def test_a_run_time_failure_falls_back_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="bench.run.probe"):
        stats = probe(Toy(), ReadsItem(), 1, 16)
    assert stats["probe_vectorized"] == 0.0 and math.isfinite(stats["grad_variance"])
    assert any("vectorized draw failed" in record.getMessage() for record in caplog.records)
    assert "vectorized draw failed" in vectorization_blocker(Toy(), ReadsItem())
    with pytest.raises(RuntimeError):
        probe_module.runtime_blockers.clear()
        probe(Toy(), ReadsItem(), 1, 16, "true")


def test_a_task_that_overrides_loss_is_not_vectorized() -> None:
    assert "overrides loss()" in vectorization_blocker(OwnLoss(), Gumbel())
    assert probe(OwnLoss(), Gumbel(), 1, 8)["probe_vectorized"] == 0.0


def test_vectorize_setting_values() -> None:
    assert [vectorize_mode(value) for value in ("auto", "TRUE", "false", True, False, None)] == [
        "auto",
        "true",
        "false",
        "true",
        "false",
        "auto",
    ]
    with pytest.raises(ConfigError, match="probe.vectorize must be auto"):
        vectorize_mode("sometimes")


def test_runner_threads_probe_vectorize_through(config_factory, tmp_path) -> None:
    config = config_factory("task=toy", "estimator=st", "steps=20", "probe.every=10", "probe.draws=8")
    assert config.probe.vectorize == "auto"
    summary = run(config, tmp_path / "auto")
    assert summary["status"] == "ok" and summary["probe_vectorized"] == 1.0
    summary = run(
        config_factory("task=toy", "estimator=st", "steps=5", "probe.vectorize=false"), tmp_path / "loop"
    )
    assert summary["status"] == "ok" and summary["probe_vectorized"] == 0.0
    with pytest.raises(ConfigError, match="probe.vectorize must be auto"):
        run(config_factory("task=toy", "steps=5", "probe.vectorize=maybe"), tmp_path / "bad")


def test_gradient_statistics_equal_the_design_formulas() -> None:
    """The one-pass implementation against a literal float64 transcription of docs/design.md, "Metrics"."""
    generator = torch.Generator().manual_seed(5)
    gradients = torch.randn(300, 7, generator=generator) * 0.3 + torch.linspace(-1, 1, 7)
    reference = torch.linspace(-1, 1, 7) + 0.05
    stats = gradient_statistics(gradients, reference)
    g, r = gradients.double(), reference.double()
    draws, mean = g.shape[0], g.double().mean(0)
    variance = float(((g - mean) ** 2).sum() / (draws - 1))
    expected = {
        "grad_variance": variance,
        "grad_bias": float((mean - r).norm()),
        "grad_bias_se": math.sqrt(variance / draws),
        "grad_bias_sq": float((mean - r) @ (mean - r)) - variance / draws,
        "grad_mse": float(((g - r) ** 2).sum(1).mean()),
        # Debiased for the probe's noise: E‖ḡ‖² = ‖E ĝ‖² + V/M.
        "grad_cos": float(mean @ r / (r.norm() * math.sqrt(float(mean @ mean) - variance / draws))),
        "grad_snr": (float(mean @ mean) - variance / draws) / variance,
    }
    # float64 draws are computed in float64: the formulas to rounding. float32 draws (training's) are centred
    # and squared in float32 (bench/run/probe/statistics.py): each of the 2,100 terms rounds at eps/2 = 6e-8,
    # their sums drift like sqrt(2100) x 6e-8 = 3e-6 at most-probable worst, so 1e-5 relative.
    in_float64 = gradient_statistics(gradients.double(), reference)
    for name, value in expected.items():
        assert in_float64[name] == pytest.approx(value, rel=1e-10), name
        assert stats[name] == pytest.approx(value, rel=1e-5), name
    assert gradients.dtype == torch.float32  # the input is not modified in place
    no_reference = gradient_statistics(gradients, None)
    assert math.isnan(no_reference["grad_bias"]) and math.isnan(no_reference["grad_mse"])
    assert math.isnan(gradient_statistics(torch.ones(4, 3, dtype=torch.float64), None)["grad_snr"])


def test_split_parameters_flattens_every_distribution_kind_with_pytree() -> None:
    # Guards the private torch.utils._pytree calls behind split_parameters: a Gaussian and a Codebook
    # (NamedTuples), plain logits, and nested containers with a constant inside flatten to their tensors in
    # order and rebuild to the same type with the replacements in place.
    from estimators import Codebook, Gaussian

    mean, log_scale = torch.zeros(3), torch.ones(3)
    z_e, codes, logits = torch.zeros(2, 4), torch.ones(5, 4), torch.zeros(2, 3)
    cases = [
        (logits, [logits]),
        (Gaussian(mean, log_scale), [mean, log_scale]),
        (Codebook(z_e, codes), [z_e, codes]),
        ({"a": mean, "b": (log_scale, 7)}, [mean, log_scale]),
    ]
    for params, tensors in cases:
        leaves, rebuild = split_parameters(params)
        assert len(leaves) == len(tensors) and all(a is b for a, b in zip(leaves, tensors, strict=True))
        replaced = [leaf + 1 for leaf in leaves]
        rebuilt = rebuild(replaced)
        assert type(rebuilt) is type(params)
        again, _ = split_parameters(rebuilt)
        assert all(a is b for a, b in zip(again, replaced, strict=True))
    assert rebuild([mean, log_scale])["b"][1] == 7  # the constant leaf passes through
