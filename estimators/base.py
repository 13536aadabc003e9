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
``torch.func.vmap(..., randomness="different")`` vectorizes, unless the caller passes pre-drawn noise:
``estimator(params, f, samples, noise=draw_noise(params, samples))``. Estimators given the same noise use
the same random numbers where they sample alike (common random numbers, Glasserman & Yao 1992): every
categorical estimator that draws D = argmax(θ + G(U)) reads the same uniforms U (stream ``uniform``), so
score-function, straight-through, ReinMax and Gumbel estimators see the same classes draw by draw;
antithetic pairs (``antithetic``), Gaussian draws (``normal``) and the measure-valued derivative's
Weibull and Maxwell draws have streams of their own. The noise is a dict of tensors, so that
``torch.func.vmap`` can batch it as an ordinary argument.
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

Noise = dict[str, Tensor]
"""Pre-drawn random numbers by stream name (``draw_noise``); ``None`` draws from the global generator."""


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

    def forward(
        self, params, f: Objective, samples: int = 1, noise: Noise | None = None
    ) -> Tensor:  # pragma: no cover - abstract
        """One surrogate; ``noise`` (optional, ``draw_noise``) replaces the global generator's draws."""
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


MEASURE_VALUED_STREAMS = ("weibull", "weibull_negative", "maxwell", "sign", "coupling", "normal_negative")


def noise_stream(
    noise: Noise | None, stream: str, shape: torch.Size | tuple[int, ...], like: Tensor, normal: bool = False
) -> Tensor:
    """The stream's pre-drawn numbers, of exactly ``shape``; without noise, fresh U(0, 1) (or N(0, 1) with
    ``normal``) numbers from the global generator."""
    if noise is None:
        draw = torch.randn if normal else torch.rand
        return draw(tuple(shape), dtype=like.dtype, device=like.device)
    if stream not in noise:
        raise EstimatorError(
            f"the noise given to the estimator has no stream {stream!r} (it has "
            f"{', '.join(noise) or 'none'}); draw it with estimators.base.draw_noise for these parameters."
        )
    value = noise[stream]
    if tuple(value.shape) != tuple(shape):
        raise EstimatorError(
            f"noise stream {stream!r} has shape {tuple(value.shape)}, but this estimate needs "
            f"{tuple(shape)}; draw it with estimators.base.draw_noise for these parameters and sample count."
        )
    return value.to(like.dtype)


def draw_noise(
    params, samples: int, draws: int | None = None, generator: torch.Generator | None = None
) -> Noise:
    """Every noise stream an estimate with ``samples`` samples at ``params`` may read (common random numbers).

    Categorical logits ``(*B, C)``: ``uniform`` (S, *B, C), the uniforms behind D = argmax(θ + G(U)), and
    ``antithetic`` (⌈S/2⌉, *B), DisARM's shared uniforms. A Gaussian of batch shape B: ``normal`` (S, *B),
    the draw z = μ + σε of the score function, the pathwise estimator and the measure-valued derivative, and
    that derivative's own streams (``MEASURE_VALUED_STREAMS``; ``maxwell`` is (3, S, *B)). With ``draws`` =
    M every stream gets a leading dimension M (one noise per probe draw, for ``torch.func.vmap``). An
    estimate with fewer samples reads the first S rows: ``take_samples``.
    """
    leading = () if draws is None else (int(draws),)
    like = params.mean if isinstance(params, Gaussian) else params
    if not isinstance(like, Tensor) or (like is params and params.dim() == 0):
        raise EstimatorError(
            f"draw_noise knows categorical logits (a tensor (..., C)) and estimators.Gaussian, got "
            f"{type(params).__name__}."
        )
    options = {"generator": generator, "dtype": like.dtype, "device": like.device}

    def uniform(*shape: int) -> Tensor:
        return torch.rand((*leading, *shape), **options)

    def normal(*shape: int) -> Tensor:
        return torch.randn((*leading, *shape), **options)

    if isinstance(params, Gaussian):
        batch = torch.broadcast_shapes(params.mean.shape, params.log_scale.shape)
        return {
            "normal": normal(samples, *batch),
            "weibull": uniform(samples, *batch),
            "weibull_negative": uniform(samples, *batch),
            "maxwell": normal(3, samples, *batch),
            "sign": uniform(samples, *batch),
            "coupling": uniform(samples, *batch),
            "normal_negative": normal(samples, *batch),
        }
    return {
        "uniform": uniform(samples, *params.shape),
        "antithetic": uniform((samples + 1) // 2, *params.shape[:-1]),
    }


def take_samples(noise: Noise, samples: int, leading: int = 0) -> Noise:
    """The noise of the first ``samples`` samples of noise drawn for more (``leading``: dimensions before the
    sample dimension, 1 for noise drawn with ``draws``); common random numbers across sample counts."""
    taken = {}
    for stream, value in noise.items():
        axis = leading + (1 if stream == "maxwell" else 0)
        count = (samples + 1) // 2 if stream == "antithetic" else samples
        taken[stream] = value.narrow(axis, 0, count)
    return taken


def gumbel_noise(shape: torch.Size | tuple[int, ...], like: Tensor, noise: Noise | None = None) -> Tensor:
    """g = −log(−log u), u ~ U(0, 1) (the stream ``uniform`` when ``noise`` is given), clamped away from 0
    and 1 so g stays finite."""
    tiny = torch.finfo(like.dtype).tiny
    uniform = noise_stream(noise, "uniform", shape, like).clamp(tiny, 1.0 - 1e-7)
    return -torch.log(-torch.log(uniform))


def one_hot_like(index: Tensor, like: Tensor) -> Tensor:
    """One-hot vectors of ``like``'s shape from class indices; unlike ``F.one_hot`` this works under vmap."""
    return torch.zeros_like(like).scatter(-1, index.unsqueeze(-1), 1.0)


def sample_categorical(logits: Tensor, samples: int, noise: Noise | None = None) -> Tensor:
    """One-hot samples of shape ``(S, *logits.shape)`` from Cat(softmax(logits)), via the Gumbel-max trick:
    D = one_hot(argmax(logits + g)), g from ``noise``'s stream ``uniform`` when given."""
    expanded = logits.detach().expand(samples, *logits.shape)
    index = (expanded + gumbel_noise(expanded.shape, logits, noise)).argmax(-1)
    return one_hot_like(index, expanded)


def expand_samples(params: Tensor, samples: int) -> Tensor:
    return params.expand(samples, *params.shape)
