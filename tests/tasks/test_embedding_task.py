"""The embedding task: its data, and what it shows about Adam, lazy Adam, SparseAdam and Lookahead."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from bench.formats.errors import ConfigError
from bench.run.runner import run
from bench.tasks.embedding import EmbeddingTask, describe_data
from estimators.none import NoSampling

# A smaller table than the default 100,000 × 32 keeps each run to a second or two; batches still touch
# only a few percent of the rows. One thread: tiny tensor operations are much slower with two threads
# on a shared machine.
SMALL = [
    "threads=1",
    "task.vocabulary=5000",
    "task.dim=8",
    "task.train_size=4000",
    "task.test_size=500",
    "task.eval_size=500",
]


def run_embedding(config_factory, tmp_path, *overrides: str):
    config = config_factory(
        "task=embedding",
        "estimator=none",
        "steps=40",
        "log_every=5",
        "probe.every=20",
        "probe.draws=8",
        *SMALL,
        *overrides,
    )
    summary = run(config, tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    return summary, metrics


def test_data_is_sparse_per_batch_and_generated_from_the_seed():
    task = EmbeddingTask(vocabulary=20_000, train_size=5_000, test_size=1_000)
    facts = describe_data(task)
    assert facts["fraction_of_rows_per_batch"] < 0.05  # most rows absent from any one batch
    assert facts["tokens_in_training_set"] < 20_000  # some rows never seen at all
    assert facts["majority_class_rate"] < 0.6  # four classes, none dominating: accuracy means something
    again = EmbeddingTask(vocabulary=20_000, train_size=5_000, test_size=1_000)
    other = EmbeddingTask(vocabulary=20_000, train_size=5_000, test_size=1_000, data_seed=1)
    assert torch.equal(task.train_tokens, again.train_tokens) and torch.equal(
        task.test_labels, again.test_labels
    )
    assert not torch.equal(task.train_tokens, other.train_tokens)
    # Zipf: the most frequent token is far more frequent than a mid-rank one.
    counts = torch.bincount(task.train_tokens.flatten(), minlength=20_000)
    assert counts[0] > 50 * max(int(counts[1000]), 1)


def test_the_none_estimator_evaluates_f_on_the_logits():
    task = EmbeddingTask(vocabulary=500, train_size=200, test_size=50, batch_size=16)
    batch = task.train_batch(1)
    expected = torch.nn.functional.cross_entropy(task.logits(batch[0]), batch[1])
    torch.testing.assert_close(task.loss(NoSampling(), samples=1, batch=batch), expected)


@pytest.mark.parametrize(
    ("optimizer", "sparse"),
    [("adam", False), ("lazy_adam", False), ("lazy_adam", True), ("sparse_adam", True), ("lookahead", False)],
)
def test_each_optimizer_trains_and_records_its_metrics(config_factory, tmp_path, optimizer, sparse):
    summary, metrics = run_embedding(
        config_factory, tmp_path, f"optimizer={optimizer}", f"task.sparse={sparse}"
    )
    assert summary["status"] == "ok", summary["error"]
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["reference"] == "none" and written["grad_bias"] is None  # no reference: no bias, null
    assert summary["optimizer_time_ms"] > 0
    objective = metrics[metrics.metric == "objective"].set_index("step")["value"]
    assert objective[40] < objective[0]  # held-out cross-entropy went down
    names = set(metrics.metric)
    assert {"test_accuracy", "train_accuracy", "rows_touched", "untouched_row_shift", "rows_seen"} <= names
    # Fresh batches per probe draw: the minibatch gradient has a spread (a fixed batch would give exactly 0).
    assert (metrics[metrics.metric == "grad_variance"]["value"] > 0).all()


def test_lazy_optimizers_leave_rows_outside_the_batch_alone_and_adam_does_not(config_factory, tmp_path):
    moved = {}
    for optimizer in ("adam", "lazy_adam", "sparse_adam"):
        sparse = optimizer == "sparse_adam"
        _, metrics = run_embedding(
            config_factory, tmp_path / optimizer, f"optimizer={optimizer}", f"task.sparse={sparse}"
        )
        rows = metrics[metrics.metric == "untouched_rows_moved"]
        moved[optimizer] = rows[rows.step > 5]["value"]
        assert (metrics[metrics.metric == "rows_touched"]["value"] > 0).all()
    assert (moved["lazy_adam"] == 0).all() and (moved["sparse_adam"] == 0).all()
    assert (moved["adam"] > 0.9).all()  # Adam's momentum moves (nearly) every row seen the step before


def test_sparse_adam_on_dense_gradients_is_a_config_error(config_factory, tmp_path):
    # Refused before the run is built (the optimizer config declares the gradients it takes), naming those
    # that take dense gradients.
    with pytest.raises(ConfigError, match="takes sparse gradients only.*take dense gradients: adam, adamw"):
        run_embedding(config_factory, tmp_path, "optimizer=sparse_adam", "task.sparse=false")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "task.sparse=false" in summary["error"]


def test_adam_on_sparse_gradients_is_a_config_error(config_factory, tmp_path):
    with pytest.raises(ConfigError, match="take sparse gradients: lazy_adam, sgd, sparse_adam, lookahead"):
        run_embedding(config_factory, tmp_path, "optimizer=adam", "task.sparse=true")


def test_a_sampling_estimator_is_refused_with_the_one_that_fits(config_factory, tmp_path):
    with pytest.raises(ConfigError, match="Estimators that fit embedding: none"):
        run(config_factory("task=embedding", "estimator=gumbel", *SMALL), tmp_path)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("task.vocabulary=1", "task.vocabulary"),
        ("task.batch_size=0", "task.batch_size"),
        ("task.zipf=-1", "task.zipf"),
    ],
)
def test_bad_settings_are_named(config_factory, tmp_path, override, named):
    with pytest.raises(ConfigError, match=named):
        run(config_factory("task=embedding", "estimator=none", *SMALL, override), tmp_path)
