"""The embedding task: a bag-of-tokens classifier over a large vocabulary, to tell optimizers apart.

Data (generated from ``data_seed``, no download). Token ids are frequency ranks: token r (0-based) has
probability ∝ 1/(r + 1)^s over a vocabulary of V tokens (Zipf's law, s = ``zipf``). Each example is a bag
of ``bag`` tokens drawn independently from that law; its label is planted by a hidden rule,

    y = argmax_c Σ_{t ∈ bag} h_{t,c},    h_{t,c} ~ N(0, 1) drawn once per token and class,

so every token carries information, but rare tokens are seen rarely: in one batch of B bags at most B·bag
of the V rows of the embedding table get a gradient (about 0.6% with the defaults) and most rows are never
seen at all.

Model. logits_c = ⟨mean_{t ∈ bag} e_t, u_c⟩, with a token table E (V × D, ``nn.EmbeddingBag``) and a class
table U (C × D, ``nn.Embedding`` looked up for every class). Both tables are embeddings, so with
``sparse: true`` EVERY parameter gets a sparse gradient and ``torch.optim.SparseAdam`` can train the whole
model; with ``sparse: false`` (default) the gradients are dense tensors whose untouched rows are zero.
SparseAdam needs ``sparse: true``, Adam/AdamW/Lookahead need ``sparse: false``; ``lazy_adam`` and ``sgd``
take either. A mismatch stops the run at its first step with the optimizer's message (exit code 2).

Nothing is sampled (latent kind ``none``; use ``estimator=none``): the loss is the mean cross-entropy of a
batch. There is no reference gradient (``reference: none``); each probe draw uses a fresh training batch
(``probe_batches``), so ``grad_variance`` is the spread of the minibatch gradient of the class table U.

Metrics. ``evaluate()``: ``objective`` = test cross-entropy (``final_loss``), ``validation_objective`` = the
same on a validation set (drawn after the train and test sets), ``test_accuracy``,
``train_eval_loss`` and ``train_accuracy`` on the first ``eval_size`` training examples, ``rows_seen`` =
fraction of the V rows that have been in at least one training batch. ``after_step`` (recorded every
``log_every`` steps): ``rows_touched`` = distinct tokens in the step's batch (rows with a gradient);
``untouched_rows_moved`` = fraction of the rows of the PREVIOUS batch that are not in this one and yet
changed at this step, ``untouched_row_shift`` = their mean distance moved ‖Δe_t‖ (Adam keeps moving such rows
with its momentum; a lazy optimizer leaves them alone: exactly 0), and ``touched_row_shift`` = the mean
distance moved by the rows in the batch, for scale. The optimizer's own step time is the runner's
``optimizer_time_ms``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.tasks.base import Task
from bench.tasks.checks import check_arguments, flag, number, whole
from bench.tasks.data import with_replacement

Batch = tuple[Tensor, Tensor]  # (tokens (B, bag), labels (B,))


def zipf_bags(
    vocabulary: int, exponent: float, examples: int, bag: int, generator: torch.Generator
) -> Tensor:
    """Token ids (examples, bag) drawn i.i.d. with P(token r) ∝ (r + 1)^−exponent."""
    weights = torch.arange(1, vocabulary + 1, dtype=torch.float64).pow(-exponent)
    return torch.multinomial(
        weights / weights.sum(), examples * bag, replacement=True, generator=generator
    ).view(examples, bag)


class EmbeddingTask(Task):
    latent = "none"
    reference = "none"
    vectorizable = False
    vectorizable_reason = "each probe draw uses its own training batch (probe_batches)"

    def __init__(
        self,
        vocabulary: int = 100_000,
        dim: int = 32,
        classes: int = 4,
        bag: int = 20,
        zipf: float = 1.1,
        train_size: int = 50_000,
        test_size: int = 5_000,
        validation_size: int = 5_000,
        batch_size: int = 64,
        sparse: bool = False,
        init_scale: float = 0.1,
        eval_size: int = 5_000,
        data_seed: int = 0,
    ) -> None:
        super().__init__()
        check_arguments(
            dict(
                vocabulary=vocabulary,
                dim=dim,
                classes=classes,
                bag=bag,
                zipf=zipf,
                train_size=train_size,
                test_size=test_size,
                validation_size=validation_size,
                batch_size=batch_size,
                sparse=sparse,
                init_scale=init_scale,
                eval_size=eval_size,
            ),
            {
                "vocabulary": whole(least=2),
                "dim": whole(least=1),
                "classes": whole(least=2),
                "bag": whole(least=1).explained("It is the number of tokens per example."),
                "zipf": number(least=0).explained("It is the Zipf exponent."),
                "train_size": whole(least=1),
                "test_size": whole(least=1),
                "validation_size": whole(least=1),
                "batch_size": whole(least=1, most=train_size),
                "sparse": flag(),
                "init_scale": number(above=0),
                "eval_size": whole(least=1),
            },
        )
        self.vocabulary, self.classes, self.batch_size, self.sparse = vocabulary, classes, batch_size, sparse
        data = torch.Generator().manual_seed(data_seed)
        hidden = torch.randn(vocabulary, classes, generator=data)
        # Train, test, then validation examples: the validation set is drawn after the other two, so that
        # adding it left the training and test data as they were.
        tokens = zipf_bags(vocabulary, zipf, train_size + test_size + validation_size, bag, data)
        labels = hidden[tokens].sum(1).argmax(-1)
        test_end = train_size + test_size
        self.train_tokens, self.train_labels = tokens[:train_size], labels[:train_size]
        self.test_tokens, self.test_labels = tokens[train_size:test_end], labels[train_size:test_end]
        self.validation_tokens, self.validation_labels = tokens[test_end:], labels[test_end:]
        self.eval_size = min(eval_size, train_size)

        self.tokens = nn.EmbeddingBag(vocabulary, dim, mode="mean", sparse=sparse)
        self.class_table = nn.Embedding(classes, dim, sparse=sparse)
        nn.init.normal_(self.tokens.weight, std=init_scale)
        nn.init.normal_(self.class_table.weight, std=1.0 / dim**0.5)

        self.seen = torch.zeros(vocabulary, dtype=torch.bool)
        self.previous_rows = torch.zeros(0, dtype=torch.long)
        self.watched: dict[str, tuple[Tensor, Tensor]] = {}

    # The model --------------------------------------------------------------------------------------
    def logits(self, tokens: Tensor) -> Tensor:
        class_vectors = self.class_table(torch.arange(self.classes))  # a lookup: sparse gradient if sparse
        return self.tokens(tokens) @ class_vectors.T

    def distribution(self, batch: Batch) -> Tensor:
        """The logits: there is no distribution to sample; the ``none`` estimator evaluates f on them."""
        return self.logits(batch[0])

    def objective(self, batch: Batch):
        labels = batch[1]
        return lambda logits: F.cross_entropy(logits, labels, reduction="none")

    # Data --------------------------------------------------------------------------------------------
    def sample_batch(self, generator: torch.Generator | None) -> Batch:
        index = with_replacement(self.train_tokens.shape[0], self.batch_size, generator)
        return self.train_tokens[index], self.train_labels[index]

    def train_batch(self, step: int, generator: torch.Generator | None = None) -> Batch:
        """A batch of ``batch_size`` examples drawn with replacement from ``generator``."""
        batch = self.sample_batch(generator)
        # Remember, before the optimizer step, the rows it will and will not touch (cheap: ~B·bag rows).
        rows = batch[0].unique()
        previous = self.previous_rows[~torch.isin(self.previous_rows, rows)]
        weight = self.tokens.weight.detach()
        self.watched = {
            "touched": (rows, weight[rows].clone()),
            "untouched": (previous, weight[previous].clone()),
        }
        self.previous_rows = rows
        self.seen[rows] = True
        return batch

    def probe_batch(self) -> Batch:
        return self.train_tokens[: self.batch_size], self.train_labels[: self.batch_size]

    def get_extra_state(self) -> dict[str, Tensor]:
        """The rows seen so far and the previous batch's rows: saved with the ``state_dict``, so that a run
        resumed from a checkpoint reports the same ``rows_seen`` and ``untouched_*`` metrics."""
        return {"seen": self.seen.clone(), "previous_rows": self.previous_rows.clone()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self.seen, self.previous_rows = state["seen"].clone(), state["previous_rows"].clone()

    def probe_batches(self, draws: int) -> list[Batch]:
        """A fresh training batch per probe draw (drawn from the probe's own random stream)."""
        return [self.sample_batch(None) for _ in range(draws)]

    def probed_parameters(self) -> dict[str, Tensor]:
        # The class table: small, and its minibatch gradient is dense in content. (The token table's
        # gradient is almost all zeros, and M copies of V × D numbers would not fit a probe.)
        return {"class_table": self.class_table.weight}

    # Metrics -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def after_step(self, step: int, batch: Batch) -> dict[str, float]:
        weight = self.tokens.weight.detach()
        metrics = {"rows_touched": float(self.watched["touched"][0].numel())}
        for kind, (rows, before) in self.watched.items():
            shift = (weight[rows] - before).norm(dim=1)
            metrics[f"{kind}_row_shift"] = float(shift.mean()) if rows.numel() else 0.0
            if kind == "untouched":
                metrics["untouched_rows_moved"] = float((shift > 0).float().mean()) if rows.numel() else 0.0
        return metrics

    @torch.no_grad()
    def measure(self, tokens: Tensor, labels: Tensor) -> tuple[float, float]:
        logits = self.logits(tokens)
        return float(F.cross_entropy(logits, labels)), float((logits.argmax(-1) == labels).float().mean())

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        test_loss, test_accuracy = self.measure(self.test_tokens, self.test_labels)
        validation_loss, _ = self.measure(self.validation_tokens, self.validation_labels)
        train_loss, train_accuracy = self.measure(
            self.train_tokens[: self.eval_size], self.train_labels[: self.eval_size]
        )
        return {
            "objective": test_loss,
            "validation_objective": validation_loss,
            "test_accuracy": test_accuracy,
            "train_eval_loss": train_loss,
            "train_accuracy": train_accuracy,
            "rows_seen": float(self.seen.float().mean()),
        }

    def extra_repr(self) -> str:
        return f"vocabulary={self.vocabulary}, classes={self.classes}, sparse={self.sparse}"


def describe_data(task: EmbeddingTask) -> dict[str, Any]:
    """Facts about the generated data (for the README and tests): how sparse one batch is."""
    batch = task.sample_batch(torch.Generator().manual_seed(0))
    return {
        "rows_per_batch": int(batch[0].unique().numel()),
        "fraction_of_rows_per_batch": batch[0].unique().numel() / task.vocabulary,
        "tokens_in_training_set": int(task.train_tokens.unique().numel()),
        "majority_class_rate": float(torch.bincount(task.test_labels).max() / task.test_labels.numel()),
    }
