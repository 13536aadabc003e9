"""Same-point gradient studies (bench.campaigns.same_point): every estimator at the same parameters, with
common random numbers, paired statistics, and the files the report and ``python -m bench.check`` read."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from bench.campaigns.same_point import run
from bench.campaigns.same_point.measure import checkpoint_noise, checkpoint_reference, draw_member, measure
from bench.campaigns.same_point.paired import paired_statistics, resampled_indices, resampled_sums
from bench.campaigns.same_point.roster import Member, roster
from bench.cli.check import check_run
from bench.run.probe.draws import probe_targets
from bench.tasks.toy import Toy
from bench.tasks.vae import VAE
from estimators import Gumbel, GumbelST, ReinMax, ScoreFunction, StraightThrough

TOY_STUDY = (
    "+experiment=toy_gradient_study",
    "steps=100",
    "study.steps=[0,10,30,100]",
    "study.estimators=[rloo,st,reinmax,gumbel_st]",
    "study.draws=1024",
    "study.bootstrap=200",
    "task.init_noise=0.0",  # from p(b = 1) = 0.3 exactly (the experiment gives each seed its own start)
    "threads=1",
)


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory):
    """A toy study from p(b = 1) = 0.3 (analytic reference), M = 1024, four estimators, four checkpoints."""
    from tests.helpers import make_config

    directory = tmp_path_factory.mktemp("toy_study")
    summary = run(make_config(*TOY_STUDY), directory)
    study = pd.read_csv(directory / "study.csv", keep_default_na=False, na_values=[""])
    study["value"] = pd.to_numeric(study["value"], errors="coerce")  # "nan": a number that does not exist
    return directory, summary, study


def member_values(study: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = study[(study["metric"] == metric) & study["samples"].notna()]
    return rows.pivot_table(index="step", columns="estimator", values="value")


def test_a_study_run_follows_the_contract_and_probes_every_estimator_at_every_checkpoint(toy_study):
    directory, summary, study = toy_study
    assert summary["status"] == "ok", summary["error"]
    assert summary["kind"] == "study" and summary["estimator"] == summary["trajectory"] == "exact"
    assert summary["study_steps"] == "0,10,30,100"
    assert summary["study_estimators"] == "gumbel_st@2,reinmax@2,rloo@2,st@2"
    assert check_run(directory) == []
    assert json.loads((directory / "summary.json").read_text())["study_draws"] == 1024
    variance = member_values(study, "grad_variance")
    assert list(variance.index) == [0, 10, 30, 100] and variance.notna().all().all()
    assert set(variance.columns) == {"gumbel_st", "reinmax", "rloo", "st"}


def test_every_estimator_at_one_checkpoint_has_the_same_params_digest(toy_study):
    directory, _, study = toy_study
    digests = study.groupby("step")["params_digest"].nunique()
    assert (digests == 1).all()
    # ... and the checkpoints are different points: the trajectory moved between them.
    assert study.groupby("step")["params_digest"].first().nunique() == 4
    paired = pd.read_csv(directory / "paired.csv")
    assert (
        paired.groupby("step")["params_digest"].first().to_dict()
        == study.groupby("step")["params_digest"].first().to_dict()
    )
    assert (member_values(study, "common_random_numbers") == 1).all().all()


def test_on_toy_rloo_passes_the_bias_test_and_st_fails_it_at_every_checkpoint(toy_study):
    _, _, study = toy_study
    probability = study[(study["metric"] == "prob_one") & study["samples"].isna()].set_index("step")["value"]
    assert probability.loc[0] == pytest.approx(0.3) and (probability >= 0.05).all()
    assert probability.is_monotonic_decreasing  # the trajectory trains towards p(b = 1) = 0
    p_values = member_values(study, "grad_bias_p")
    assert (p_values["rloo"] > 1e-3).all(), p_values["rloo"]
    assert (p_values["st"] < 1e-6).all(), p_values["st"]


class RecordingToy(Toy):
    """A toy task that records the classes f sees; drawn by the per-draw loop (f called once per draw)."""

    vectorizable = False
    vectorizable_reason = "it records f's inputs"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen: list[torch.Tensor] = []

    def objective(self, batch=None):
        inner = super().objective(batch)

        def f(z):
            self.seen.append(z.detach().argmax(-1))
            return inner(z)

        return f


def test_with_common_random_numbers_st_reinmax_and_gumbel_st_see_the_same_classes_draw_by_draw():
    task = RecordingToy(dim=6, classes=3, p0=0.4)
    targets = probe_targets(task, None)
    draws, seen = 32, {}
    noise = checkpoint_noise(task.distribution(None), 2, draws, seed=3, step=10)
    for name, estimator in (("st", StraightThrough()), ("reinmax", ReinMax()), ("gumbel_st", GumbelST())):
        task.seen.clear()
        draw_member(task, Member(name, estimator, 2, 2), None, draws, targets, noise, seed=3, step=10)
        seen[name] = torch.stack(task.seen)  # (M, S, dim): draw by draw
    assert seen["st"].shape == (draws, 2, 6)
    assert torch.equal(seen["st"], seen["reinmax"]) and torch.equal(seen["st"], seen["gumbel_st"])
    assert (
        len({tuple(draw.flatten().tolist()) for draw in seen["st"]}) > draws // 2
    )  # each draw its own noise


@pytest.fixture(scope="module")
def vae_at_step_zero():
    """The default VAE at its initial parameters (seed 0), its reference and probe targets."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    task = VAE()
    batch = task.probe_batch()
    targets = probe_targets(task, batch)
    reference = checkpoint_reference(task, batch, targets, seed=0, step=0)
    yield task, batch, targets, reference
    torch.set_num_threads(threads)


def probe_with_noise(vae, estimator, name, draws, noise_seed):
    task, batch, targets, reference = vae
    with torch.no_grad():
        params = task.distribution(batch)
    noise = checkpoint_noise(params, 2, draws, seed=noise_seed, step=0)
    member = Member(name, estimator.eval(), 2, 2)
    return measure(task, member, batch, draws, targets, reference, noise, seed=noise_seed, step=0)


def test_pairing_gumbel_with_gumbel_st_shrinks_the_standard_error_and_agrees_with_separate_probes(
    vae_at_step_zero,
):
    draws = 512
    gumbel = probe_with_noise(vae_at_step_zero, Gumbel(), "gumbel", draws, noise_seed=0)
    straight = probe_with_noise(vae_at_step_zero, GumbelST(), "gumbel_st", draws, noise_seed=0)
    indices = resampled_indices(draws, 200, seed=0)
    paired = paired_statistics(
        gumbel.norms,
        straight.norms,
        resampled_sums(gumbel.norms, indices),
        resampled_sums(straight.norms, indices),
    )
    assert paired["mse_difference_se"] <= 0.8 * paired["mse_difference_se_unpaired"], paired
    assert paired["mse_difference"] == pytest.approx(
        gumbel.statistics["grad_mse"] - straight.statistics["grad_mse"], rel=1e-6
    )
    # The same difference measured by two independent probes (noise of their own), unpaired:
    alone_gumbel = probe_with_noise(vae_at_step_zero, Gumbel(), "gumbel", draws, noise_seed=11)
    alone_straight = probe_with_noise(vae_at_step_zero, GumbelST(), "gumbel_st", draws, noise_seed=12)
    separate = alone_gumbel.statistics["grad_mse"] - alone_straight.statistics["grad_mse"]
    combined = math.sqrt(
        paired["mse_difference_se"] ** 2
        + alone_gumbel.statistics["grad_mse_se"] ** 2
        + alone_straight.statistics["grad_mse_se"] ** 2
    )
    assert abs(paired["mse_difference"] - separate) <= 4 * combined, (paired["mse_difference"], separate)
    low, high = paired["variance_ratio_low"], paired["variance_ratio_high"]
    assert low < paired["variance_ratio"] < high


def test_on_the_vae_at_the_first_checkpoint_rloo_has_more_variance_than_st(vae_at_step_zero):
    rloo = probe_with_noise(vae_at_step_zero, ScoreFunction(baseline="loo"), "rloo", 256, noise_seed=0)
    straight = probe_with_noise(vae_at_step_zero, StraightThrough(), "st", 256, noise_seed=0)
    assert rloo.statistics["grad_variance"] > straight.statistics["grad_variance"]


def test_the_roster_is_every_sampling_estimator_that_fits_with_disarm_only_for_two_classes(config_factory):
    config = config_factory("+experiment=toy_gradient_study")
    for classes, has_disarm in ((2, True), (3, False)):
        task = Toy(dim=2, classes=classes)
        members, left_out = roster(config, task, task.distribution(None).detach(), task.objective(None))
        names = {member.name for member in members}
        assert names >= {"score_function", "rloo", "st", "reinmax", "gumbel", "gumbel_st", "gumbel_rao"}
        assert not names & {"exact", "none", "reparam", "measure_valued", "vq_st"}
        assert ("disarm" in names) is has_disarm
        assert ("disarm" in left_out) is not has_disarm
        # S = 2 in the fixed comparison; in the equal-cost one an estimator that evaluates f more than once
        # per sample (rebar, relax, leg: equal_cost_<name>) is matched to rloo (and gumbel) with as many
        # evaluations of f.
        assert {member.samples for member in members if "fixed" in member.variants} == {2}
        for name in names:
            variants = set().union(*(member.variants for member in members if member.name == name))
            assert "fixed" in variants and any(variant.startswith("equal_cost") for variant in variants), name
        for member in members:
            for variant in member.variants - {"fixed", "equal_cost"}:
                matched = [other for other in members if variant in other.variants and other is not member]
                same = all(other.f_evals == member.f_evals for other in matched)
                assert matched and same, (member.name, variant)


def test_equal_cost_matches_rloo_to_an_estimator_that_costs_more_per_sample(config_factory):
    from bench.tasks.gaussian import GaussianTask

    config = config_factory(
        "+experiment=toy_gradient_study", "study.estimators=[rloo,reparam,measure_valued]"
    )
    task = GaussianTask()
    params = task.distribution(None)
    members, _ = roster(config, task, params, task.objective(None))
    by_variant: dict[str, set] = {}
    for member in members:
        for variant in member.variants:
            by_variant.setdefault(variant, set()).add((member.name, member.samples, member.f_evals))
    expensive = next(member for member in members if member.name == "measure_valued")
    assert expensive.samples == 1 and expensive.f_evals > 2
    assert by_variant["equal_cost_measure_valued"] == {
        ("measure_valued", 1, expensive.f_evals),
        ("rloo", expensive.f_evals, expensive.f_evals),
    }
    assert by_variant["equal_cost"] == {("rloo", 2, 2), ("reparam", 2, 2)}


def test_an_estimator_with_parameters_of_its_own_is_fitted_at_the_checkpoint_without_moving_the_task():
    from bench.campaigns.same_point.measure import fit_estimator_parameters
    from bench.run.checkpoint import params_digest

    class LearnedBaseline(ScoreFunction):
        """REINFORCE with a trained constant baseline (a control variate with a parameter of its own)."""

        def __init__(self):
            super().__init__()
            self.constant = torch.nn.Parameter(torch.zeros(()))

        def baseline_for(self, values):
            return self.constant

    torch.manual_seed(0)
    task = Toy(dim=3, p0=0.3)
    estimator = LearnedBaseline()
    before = params_digest(task)
    assert fit_estimator_parameters(estimator, task, None, 1, 200, 0.05) == 200
    assert params_digest(task) == before and task.logits.grad is None
    # The variance-minimizing constant baseline of f(b) = Σ (b_d − 0.45)² lies between its values.
    assert 0.2 < float(estimator.constant.detach()) < 0.8
    assert fit_estimator_parameters(ScoreFunction(), task, None, 1, 50, 0.05) == 0  # nothing to fit


def test_the_paired_statistics_of_identical_draws_are_an_exact_tie():
    from bench.campaigns.same_point.paired import DrawNorms

    rng = np.random.default_rng(0)
    norms = DrawNorms(rng.random(100), rng.random(100))
    indices = resampled_indices(100, 50, seed=1)
    sums = resampled_sums(norms, indices)
    values = paired_statistics(norms, norms, sums, sums)
    assert values["mse_difference"] == 0 and values["mse_difference_se"] == 0
    assert values["variance_ratio"] == values["variance_ratio_low"] == values["variance_ratio_high"] == 1
    assert values["squared_error_correlation"] == pytest.approx(1)


def test_the_report_draws_the_study_and_a_report_rebuilt_from_its_tables_is_the_same(toy_study, tmp_path):
    from bench.report.write import write_from_tables, write_report

    directory, _, _ = toy_study
    report = write_report(directory, tmp_path / "report")
    text = (report / "report.md").read_text()
    assert "## Same-point gradient studies" in text and "exact (study trajectory)" in text
    assert "Only 1 seed(s)" in text  # fewer than 5 seeds: said, instead of an interval
    for figure in ("study_toy_exact_progress.png", "study_toy_exact_paired.png"):
        assert (report / figure).is_file() and f"({figure})" in text
    rebuilt = write_from_tables(report, tmp_path / "rebuilt")
    section = text[text.index("## Same-point gradient studies") :]
    again = (rebuilt / "report.md").read_text()
    assert again[again.index("## Same-point gradient studies") :] == section


def test_a_stop_signal_during_the_probes_records_the_study_as_interrupted_and_a_rerun_resumes_it(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import ROOT, run_cli

    arguments = (
        "+experiment=toy_gradient_study",
        "steps=30",
        "study.steps=[0,10,30]",
        "study.estimators=[rloo,st]",
        "study.draws=20000",
        "progress=false",
        f"hydra.run.dir={tmp_path}",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", *arguments],
        cwd=ROOT,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "study.csv").exists():  # the first checkpoint is probed: the study is under way
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "step_0000030.pt" in summary["error"]
    finished = run_cli("bench", *arguments)
    assert finished.returncode == 0, finished.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["resumes"] == 1 and summary["study_steps"] == "0,10,30"
    assert check_run(tmp_path) == []
