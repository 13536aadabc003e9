"""Where a run evaluates and where it probes (bench/run/loop.py ``evaluation_weights``, optim/evaluation.py):
Schedule-Free AdamW is evaluated at its average x = (y − (1 − β₁) z)/β₁, Lookahead at its slow weights φ,
Lookahead around Schedule-Free at x(φ) = (φ − (1 − β₁) z)/β₁; gradient probes and training steps see the
weights the gradient is computed at (y, the fast weights), and evaluating does not change training by a bit.

Each run records, through the task, the parameters at every evaluation, every probe and every training
step, and the optimizer's state at the probe (z, φ), so the expected evaluation point is computed here in
float64 from the state, independently of the code under test.
"""

from __future__ import annotations

import pytest
import torch

import bench.run.loop as loop
from bench.run.build import setup
from bench.run.loop import Recorder, train
from optim.evaluation import chain

BETA1 = 0.9
# Lookahead's k = 3 and probes every 2 steps: the probes at steps 2 and 4 fall between slow updates, where
# the fast weights have left the slow ones.
RUNS = {
    "schedule_free_adamw": ("optimizer=schedule_free_adamw", "optimizer.lr=0.2"),
    "lookahead_adam": ("optimizer=lookahead", "optimizer.inner.lr=0.2", "optimizer.k=3"),
    "lookahead_schedule_free_adamw": (
        "optimizer=lookahead",
        "optimizer@optimizer.inner=schedule_free_adamw",
        "optimizer.inner.lr=0.2",
        "optimizer.k=3",
    ),
    "adam": ("optimizer=adam", "optimizer.lr=0.2"),  # negative control: evaluated where it is probed
}


def flat(tensors) -> torch.Tensor:
    return torch.cat([tensor.detach().reshape(-1).double() for tensor in tensors])


def recorded_run(config_factory, tmp_path, overrides, probe_every=2):
    """Train 5 steps of the Gaussian task, recording the parameters at evaluations, probes and steps."""
    config = config_factory(
        "task=gaussian",
        "task.dim=3",
        "estimator=reparam",
        "steps=5",
        f"probe.every={probe_every}",
        "probe.draws=2",
        "log_every=1",
        *overrides,
    )
    torch.manual_seed(0)
    task, estimator, optimizer = setup(config)
    seen = {"evaluate": [], "probe": [], "step": [], "state": []}
    evaluate, loss = task.evaluate, task.loss

    def recording_evaluate():
        seen["evaluate"].append(flat(task.parameters()))
        return evaluate()

    def recording_loss(*args, **kwargs):
        seen["step"].append(flat(task.parameters()))
        return loss(*args, **kwargs)

    def recording_probe(probed_task, *args, **kwargs):
        seen["probe"].append(flat(probed_task.parameters()))
        state = {}
        for link in chain(optimizer):
            for name in ("z", "slow"):
                values = [link.state[p].get(name) for p in task.parameters()]
                if all(value is not None for value in values):
                    state[name] = flat(values)
        seen["state"].append(state)
        return probe(probed_task, *args, **kwargs)

    probe = loop.probe
    task.evaluate, task.loss = recording_evaluate, recording_loss
    loop.probe = recording_probe
    try:
        train(config, task, estimator, optimizer, Recorder(tmp_path))
    finally:
        loop.probe = probe
    return seen, flat(task.parameters())


@pytest.mark.parametrize("name", list(RUNS))
def test_evaluations_use_the_evaluation_weights_and_probes_the_training_weights(
    name, config_factory, tmp_path, one_thread
):
    seen, final = recorded_run(config_factory, tmp_path, RUNS[name])
    # Probes at steps 0, 2, 4 and 5, each right after the evaluation of the same step; a last evaluation
    # at the end. Training steps 1..5 (the loss's one call before them counts the run's costs).
    assert len(seen["probe"]) == 4 and len(seen["evaluate"]) == 5 and len(seen["step"]) == 6
    seen["step"] = seen["step"][1:]
    # Training continues from the training weights: the probe at step 2 (4) sees what step 3 (5) starts
    # from, bit for bit, and the run ends at them.
    assert torch.equal(seen["probe"][1], seen["step"][2]) and torch.equal(seen["probe"][2], seen["step"][4])
    assert torch.equal(seen["probe"][3], final)
    for index in (1, 2, 3):  # after steps 2, 4, 5
        training, evaluated, state = seen["probe"][index], seen["evaluate"][index], seen["state"][index]
        if name == "schedule_free_adamw":
            expected = (training - (1 - BETA1) * state["z"]) / BETA1
        elif name == "lookahead_adam":
            expected = state["slow"]
        elif name == "lookahead_schedule_free_adamw":
            expected = (state["slow"] - (1 - BETA1) * state["z"]) / BETA1
        else:
            expected = training
        # float32 parameters: the library's lerp rounds at ~1e-7 of the parameters' size.
        assert torch.allclose(evaluated, expected, rtol=0, atol=1e-6), (index, evaluated, expected)
        if name != "adam":  # the evaluation point is not the training point (so the check above can fail)
            assert (evaluated - training).abs().max() > 1e-3, index
    # The end's evaluation is the same point as the last probe's evaluation (nothing moved in between).
    assert torch.equal(seen["evaluate"][4], seen["evaluate"][3])


@pytest.mark.parametrize("name", ["schedule_free_adamw", "lookahead_schedule_free_adamw"])
def test_evaluating_does_not_change_training(name, config_factory, tmp_path, one_thread):
    # The same run probed (and so evaluated) at every other step and only at the end trains the same
    # parameters bit for bit: the training weights come back by copy, not by inverting the interpolation.
    _, probed = recorded_run(config_factory, tmp_path / "a", RUNS[name], probe_every=2)
    _, unprobed = recorded_run(config_factory, tmp_path / "b", RUNS[name], probe_every=0)
    assert torch.equal(probed, unprobed)
