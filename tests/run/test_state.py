"""The training state as one object: capture and restore go over its fields, so a new field is one edit."""

from __future__ import annotations

import dataclasses

import torch

from bench.run import checkpoint
from bench.run.build import setup
from bench.run.state import TrainingState, saved


@dataclasses.dataclass
class WithSchedule(TrainingState):
    """A state with one more field, declared the way the loop's own fields are: nothing else changes."""

    warmup_left: int = saved("value", default=0)
    history: list[float] = saved("value", default_factory=list)


def build(config_factory, seed: int):
    config = config_factory("task=toy", "estimator=rloo", f"seed={seed}", "steps=3", "probe.draws=4")
    torch.manual_seed(seed)
    task, estimator, optimizer = setup(config)
    return task, estimator, optimizer, torch.Generator().manual_seed(seed)


def test_a_new_field_goes_through_a_checkpoint_without_other_edits(config_factory, tmp_path):
    task, estimator, optimizer, data = build(config_factory, 0)
    rows = [(0, "objective", 1.5)]
    state = WithSchedule(
        task, estimator, optimizer, data, step=7, rows=rows, warmup_left=3, history=[0.5, 0.25]
    )
    path = checkpoint.checkpoint_path(tmp_path, 7)
    checkpoint.save(path, {**state.capture(), "config_digest": "x", "threads": 1})
    loaded = checkpoint.load(path)

    fresh_task, fresh_estimator, fresh_optimizer, fresh_data = build(config_factory, 1)
    recorder_rows: list = []
    fresh = WithSchedule(fresh_task, fresh_estimator, fresh_optimizer, fresh_data, rows=recorder_rows)
    fresh.restore(loaded)
    assert (fresh.step, fresh.warmup_left, fresh.history) == (7, 3, [0.5, 0.25])
    assert recorder_rows == rows  # restored in place: whoever holds the list sees the restored rows
    assert checkpoint.params_digest(fresh_task) == checkpoint.params_digest(task)
    assert torch.equal(fresh_data.get_state(), data.get_state())


def test_every_field_declares_how_it_is_saved():
    kinds = {field.name: field.metadata.get("saved") for field in dataclasses.fields(TrainingState)}
    assert set(kinds.values()) <= {"module", "state_dict", "generator", "value"}, kinds
