"""Invariants of the harness: reproducible numbers, one results contract, data order by the seed alone,
Lookahead's objective at its slow weights, and a task's own default estimator."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from bench.build import setup
from bench.contract import NOT_PART_OF_THE_CONFIGURATION, NOT_PART_OF_THE_RUN, SUMMARY_FIELDS
from bench.runner import Recorder, train
from tests.helpers import CONF, run_cli

# sha256 of metrics.csv of short runs at threads=1 (torch 2.13, CPU). These are the numbers the benchmark
# reports: a change that moves them on purpose updates the digest here and says why in its commit.
SHORT_RUN = ("steps=30", "probe.every=10", "probe.draws=8", "threads=1", "progress=false")
DIGESTS = {
    ("toy", "rloo"): "bf71a85a872c8e8c621703c6eba22f3006a9cc98a38cd3b13b4dcb7693c75516",
    ("gaussian", "reparam"): "8185f94cbfa282bae2c6e26a086472899181dcee86287793626aa4e15f1bbf8f",
    ("vae", "gumbel"): "4204812d39e569d6d8134a2e1551b2dd1cf318662dd17814475716b1418e5880",
    ("embedding", "none"): "f4b55b45b05558a2d3d6f8794a7fb81ac7ca10489e7b4caab1e36dea2788d390",
}


@pytest.mark.parametrize(("task", "estimator"), list(DIGESTS))
def test_metrics_of_short_runs_are_byte_identical_to_the_recorded_ones(task, estimator, tmp_path):
    finished = run_cli(
        "bench", f"task={task}", f"estimator={estimator}", *SHORT_RUN, f"hydra.run.dir={tmp_path}"
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    digest = hashlib.sha256((tmp_path / "metrics.csv").read_bytes()).hexdigest()
    assert digest == DIGESTS[task, estimator]


def test_hydra_excludes_exactly_the_keys_that_do_not_change_the_run():
    # One sweep folder per configuration and seed: the folder name leaves out exactly the keys that change how
    # a run is shown or scheduled, and keeps the seed.
    config = OmegaConf.load(CONF / "config.yaml")
    excluded = list(config.hydra.job.config.override_dirname.exclude_keys)
    assert excluded == list(NOT_PART_OF_THE_RUN)
    assert NOT_PART_OF_THE_CONFIGURATION == ("seed", *NOT_PART_OF_THE_RUN)


def test_a_fresh_run_writes_every_contract_field(config_factory, tmp_path):
    import json

    from bench.runner import run

    run(config_factory("task=toy", "estimator=rloo", "steps=5", "probe.draws=4"), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [field.name for field in SUMMARY_FIELDS if field.name not in summary] == []


def recorded_batches(config_factory, tmp_path: Path, estimator: str, steps: int = 6) -> list[torch.Tensor]:
    """The training batches a run of ``estimator`` on vqvae (seed 0) sees, through the runner's own loop."""
    config = config_factory("task=vqvae", f"estimator={estimator}", f"steps={steps}", "probe.every=0")
    config.probe.draws = 2
    torch.manual_seed(config.seed)
    task, model_estimator, optimizer = setup(config)
    seen: list[torch.Tensor] = []
    original = task.train_batch

    def recording(step: int, generator: torch.Generator | None = None) -> torch.Tensor:
        batch = original(step, generator)
        seen.append(batch.clone())
        return batch

    task.train_batch = recording
    train(config, task, model_estimator, optimizer, Recorder(tmp_path))
    return seen


def test_vqvae_data_order_depends_on_the_seed_alone(config_factory, tmp_path):
    # vq_stochastic samples codes from the global generator and vq_st does not: before the fix their runs of
    # one seed drew different training batches.
    straight = recorded_batches(config_factory, tmp_path / "st", "vq_st")
    stochastic = recorded_batches(config_factory, tmp_path / "stochastic", "vq_stochastic")
    assert len(straight) == len(stochastic) == 6
    assert all(torch.equal(a, b) for a, b in zip(straight, stochastic, strict=True))


def test_train_batch_without_a_generator_argument_still_works():
    from bench.runner import batch_source
    from bench.tasks.toy import Toy

    class OldStyle(Toy):  # a task written before train_batch was offered the run's generator
        def train_batch(self, step):
            return step * 10

    class NewStyle(Toy):
        def train_batch(self, step, generator=None):
            return int(torch.randint(1000, (1,), generator=generator))

    generator = torch.Generator().manual_seed(3)
    assert batch_source(OldStyle(), generator)(2) == 20
    expected = int(torch.randint(1000, (1,), generator=torch.Generator().manual_seed(3)))
    assert batch_source(NewStyle(), generator)(1) == expected


def test_lookahead_objective_is_evaluated_at_the_slow_weights(config_factory, tmp_path):
    # probe.every=3 is not a multiple of k=5: at step 3 the fast weights have moved three steps, while the
    # slow weights are still the initial parameters, so the objective recorded there equals step 0's.
    config = config_factory(
        "task=toy",
        "estimator=score_function",
        "optimizer=lookahead",
        "steps=3",
        "probe.every=3",
        "probe.draws=4",
    )
    config.optimizer.inner.lr = 0.5  # large steps: the fast weights move visibly
    torch.manual_seed(0)
    task, estimator, optimizer = setup(config)
    config.samples = 1
    recorder = Recorder(tmp_path)
    measured = train(config, task, estimator, optimizer, recorder)
    objective = {step: value for step, metric, value in recorder.rows if metric == "objective"}
    assert objective[3] == pytest.approx(objective[0], rel=1e-12)
    assert measured["final"]["objective"] == pytest.approx(objective[0], rel=1e-12)
    fast = task.evaluate()["objective"]  # the fast weights, where the gradient is probed
    assert abs(fast - objective[0]) > 1e-3
    # Negative control: plain Adam records the moved parameters.
    config = config_factory(
        "task=toy", "estimator=score_function", "optimizer=adam", "steps=3", "probe.every=3"
    )
    config.optimizer.lr, config.probe.draws, config.samples = 0.5, 4, 1
    torch.manual_seed(0)
    task, estimator, optimizer = setup(config)
    recorder = Recorder(tmp_path)
    train(config, task, estimator, optimizer, recorder)
    objective = {step: value for step, metric, value in recorder.rows if metric == "objective"}
    assert abs(objective[3] - objective[0]) > 1e-3


def test_embedding_takes_the_none_estimator_by_itself(config_factory):
    assert config_factory("task=embedding").estimator.name == "none"
    assert config_factory("task=embedding", "estimator=gumbel").estimator.name == "gumbel"  # refused later
    assert config_factory("task=vae").estimator.name == "gumbel"
