"""The estimator interface shared by every gradient estimator in this package.

Every estimator targets the gradient of an expectation

    L(θ) = E_{z ~ p_θ(z)} [ f(z) ],

where θ are the *distribution parameters* (logits of a categorical, mean and log-scale of a Gaussian, the
encoder output of a vector quantizer) and ``f`` may itself depend on other trainable parameters (a
decoder). An estimator is called as

    surrogate = estimator(params, f, samples)

and returns a *surrogate* tensor. Its value is the plain Monte Carlo estimate of L (so it can be logged as
the training loss) and ``surrogate.sum().backward()`` writes one gradient estimate ĝ into every tensor
that ``params`` and ``f`` depend on. One interface serves training (call ``backward``) and measurement (call
it M times, or under ``torch.func.vmap``, and look at the spread of ĝ).

Shapes. ``params`` has a batch shape B (for example ``(batch, latent_variables)``) and an event shape (the
C classes of a categorical, nothing for a Gaussian). ``f`` receives samples of shape ``(S, *B, *event)``
and returns values of shape ``(S, *B[:k])`` for some k: it may couple the trailing latent dimensions (a
decoder reads all L latent variables of one data point) but not the leading ones. The returned surrogate
has shape ``B[:k]`` (averaged over the S samples); log-probabilities are summed over ``B[k:]`` so that
they match ``f``'s output.

Randomness comes from torch's global generator (``torch.rand``/``torch.randn``), which is what
``torch.func.vmap(..., randomness="different")`` vectorizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

# "none": nothing is sampled (the embedding task); only the `none` estimator fits it.
LATENT_KINDS = ("categorical", "gaussian", "codebook", "none")

Objective = Callable[[Tensor], Tensor]


class Gaussian(NamedTuple):
    """Parameters of a diagonal Gaussian N(mean, diag exp(log_scale)²); the ``gaussian`` latent kind.

    (The ``categorical`` kind passes its logits as a plain tensor of shape ``(*B, C)``.) A ``NamedTuple``, so
    that ``torch.func`` and pytree utilities see its two tensors without a registration.
    """

    mean: Tensor
    log_scale: Tensor

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp()

    def log_prob(self, z: Tensor) -> Tensor:
        """Elementwise log-density of ``z`` (shape ``(S, *B)``)."""
        standard = (z - self.mean) / self.scale
        return -0.5 * standard**2 - self.log_scale - 0.5 * math.log(2 * math.pi)


class EstimatorError(ValueError):
    """Raised for invalid estimator settings or inputs (a bad temperature, too few samples, ...)."""


class Estimator(nn.Module):
    """Base class: subclasses set ``latents`` and ``unbiased`` and implement ``forward``.

    ``latents`` are the kinds of latent variable the estimator supports (from ``LATENT_KINDS``); a task
    declares its own kind and the harness refuses a mismatch. ``unbiased`` records whether E[ĝ] = ∇L.
    ``min_samples`` is the smallest sample count S the estimator works with.
    """

    latents: ClassVar[tuple[str, ...]] = ()
    unbiased: ClassVar[bool] = False
    min_samples: ClassVar[int] = 1

    def check_samples(self, samples: int) -> None:
        if samples < self.min_samples:
            raise EstimatorError(
                f"{type(self).__name__} needs at least {self.min_samples} samples per gradient estimate, "
                f"got samples={samples}."
            )

    def f_evaluations(self, params, f: Objective, samples: int) -> int:
        """Evaluations of f per gradient estimate, for one data point: S unless the estimator says otherwise.

        A deterministic measure of cost that no machine load can disturb (``exact`` enumerates C^m outcomes,
        ``measure_valued`` evaluates f 1 + 4n times per sample); the harness records it as ``f_evals``.
        """
        return samples

    def on_step(self, step: int) -> dict[str, float]:
        """Called by a training loop before training step ``step`` (1-based); e.g. a temperature schedule.

        Returns metrics worth recording at this step (e.g. ``{"tau": 0.8}`` when the temperature changed).
        """
        return {}

    def forward(self, params, f: Objective, samples: int = 1) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def match_dims(values: Tensor, reference: Tensor) -> Tensor:
    """Sum ``values`` over its trailing dimensions until it has as many dimensions as ``reference``.

    Used to sum per-variable log-probabilities ``(S, *B)`` down to the shape of ``f``'s output
    ``(S, *B[:k])``.
    """
    if values.dim() < reference.dim():
        raise EstimatorError(
            f"f returned values of shape {tuple(reference.shape)}, which has more dimensions than the "
            f"samples' batch shape {tuple(values.shape)}; f must return (samples, *batch[:k])."
        )
    extra = values.dim() - reference.dim()
    return values.sum(dim=tuple(range(reference.dim(), reference.dim() + extra))) if extra else values


def check_temperature(tau: float) -> float:
    tau = float(tau)
    if not tau > 0 or tau != tau or tau == float("inf"):
        raise EstimatorError(f"The temperature tau must be a finite number > 0, got tau={tau}.")
    return tau


def gumbel_noise(shape: torch.Size | tuple[int, ...], like: Tensor) -> Tensor:
    """g = −log(−log u), u ~ U(0, 1), clamped away from 0 and 1 so g stays finite."""
    tiny = torch.finfo(like.dtype).tiny
    uniform = torch.rand(shape, dtype=like.dtype, device=like.device).clamp(tiny, 1.0 - 1e-7)
    return -torch.log(-torch.log(uniform))


def one_hot_like(index: Tensor, like: Tensor) -> Tensor:
    """One-hot vectors of ``like``'s shape from class indices; unlike ``F.one_hot`` this works under vmap."""
    return torch.zeros_like(like).scatter(-1, index.unsqueeze(-1), 1.0)


def sample_categorical(logits: Tensor, samples: int) -> Tensor:
    """One-hot samples of shape ``(S, *logits.shape)`` from Cat(softmax(logits)), via the Gumbel-max trick."""
    expanded = logits.detach().expand(samples, *logits.shape)
    index = (expanded + gumbel_noise(expanded.shape, logits)).argmax(-1)
    return one_hot_like(index, expanded)


def expand_samples(params: Tensor, samples: int) -> Tensor:
    return params.expand(samples, *params.shape)
