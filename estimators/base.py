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
score-function, straight-through, ReinMax and Gumbel estimators see the same classes draw by draw; every
Gaussian estimator reads the same ε of z = μ + σε (stream ``normal``). These two are the latent kinds' own
streams (``KIND_STREAMS``). An estimator that needs noise of another kind declares it in its class,
``noise_streams = (NoiseStream(...), ...)`` (DisARM's antithetic uniforms, the measure-valued derivative's
Weibull and Maxwell draws), and ``draw_noise`` draws every declared stream of the latent kind: a new
estimator with a new kind of noise changes no file but its own. The noise is a dict of tensors, so that
``torch.func.vmap`` can batch it as an ordinary argument.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves, tree_map

# "none": nothing is sampled (the embedding task); only the `none` estimator fits it.
LATENT_KINDS = ("categorical", "gaussian", "codebook", "none")
OWN_LEARNING_RATE = 1e-3  # Adam's learning rate for an estimator's own parameters, unless it has one

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


@dataclass(frozen=True)
class NoiseStream:
    """One stream of pre-drawn random numbers (``draw_noise``), declared by the estimators that read it.

    For distribution parameters of batch shape B (and event shape E: the C classes of a categorical, nothing
    for a Gaussian) and S samples the stream has shape ``(*before, rows, *B, *E)`` (``event=False``: without
    E), rows = S (``pairs=False``) or ⌈S/2⌉ (``pairs=True``: one number per antithetic pair); its numbers are
    U(0, 1), or N(0, 1) with ``normal``. Estimators that declare the same name share the stream (common
    random numbers); two declarations of one name must be equal.
    """

    name: str
    latent: str
    normal: bool = False
    pairs: bool = False
    event: bool = True
    before: tuple[int, ...] = ()

    def rows(self, samples: int) -> int:
        return (samples + 1) // 2 if self.pairs else samples

    def shape(self, samples: int, batch: tuple[int, ...], event: tuple[int, ...]) -> tuple[int, ...]:
        return (*self.before, self.rows(samples), *batch, *(event if self.event else ()))


# The latent kinds' own streams, drawn first: the uniforms behind a categorical sample D = argmax(θ + G(U))
# (``sample_categorical``) and the ε of a Gaussian draw z = μ + σε.
UNIFORM = NoiseStream("uniform", "categorical")
NORMAL = NoiseStream("normal", "gaussian", normal=True)
KIND_STREAMS: dict[str, tuple[NoiseStream, ...]] = {"categorical": (UNIFORM,), "gaussian": (NORMAL,)}

# Every Estimator subclass, in the order its class was created (``Estimator.__init_subclass__``).
ESTIMATOR_CLASSES: list[type] = []


class Estimator(nn.Module):
    """Base class: subclasses set ``latents`` and ``unbiased`` and implement ``forward``.

    ``latents`` are the kinds of latent variable the estimator supports (from ``LATENT_KINDS``); a task
    declares its own kind and the harness refuses a mismatch. ``unbiased`` records whether E[ĝ] = ∇L.
    ``min_samples`` is the smallest sample count S the estimator works with. ``noise_streams`` declares the
    pre-drawn noise it reads beyond its latent kind's own stream (``NoiseStream``; ``draw_noise``).
    """

    latents: ClassVar[tuple[str, ...]] = ()
    unbiased: ClassVar[bool] = False
    min_samples: ClassVar[int] = 1
    # True for an estimator that trains only a multi-sample objective (``ImportanceWeighted``): VIMCO.
    multi_sample: ClassVar[bool] = False
    # Estimators with trainable parameters of their own (``own_parameters``) set a factory
    # ``optimizer(parameters) -> torch.optim.Optimizer`` for them; None: Adam with ``OWN_LEARNING_RATE``.
    optimizer: Callable[..., torch.optim.Optimizer] | None = None
    # The streams of pre-drawn noise the estimator reads beyond its latent kind's own (``KIND_STREAMS``):
    # ``draw_noise`` draws every stream any estimator declares.
    noise_streams: ClassVar[tuple[NoiseStream, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ESTIMATOR_CLASSES.append(cls)

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        """``forward``, with a multi-sample objective bound to the distribution parameters of this call
        (``ImportanceWeighted.bind``): its log q then reads the very tensors the estimate is taken at."""
        if len(args) >= 2 and isinstance(args[1], ImportanceWeighted):
            args = (args[0], args[1].bind(args[0]), *args[2:])
        return super().__call__(*args, **kwargs)

    def own_parameters(self) -> list[nn.Parameter]:
        """The estimator's own trainable parameters (a control variate's: REBAR's η and λ, RELAX's network),
        trained on the variance objective (``variance_backward``), never by the model's optimizer."""
        return [parameter for parameter in self.parameters() if parameter.requires_grad]

    def make_optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer of ``own_parameters`` (``self.optimizer``, else Adam); None where there are none."""
        own = self.own_parameters()
        if not own:
            return None
        if callable(self.optimizer):
            return self.optimizer(own)
        return torch.optim.Adam(own, lr=OWN_LEARNING_RATE)

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


def coupled_shape(values: Tensor, batch_shape: torch.Size, samples_shape: torch.Size) -> torch.Size:
    """The batch dimensions f couples: f returned ``values`` of shape (S, *batch_shape[:k]) for samples of
    shape ``samples_shape`` = (S, *batch_shape, ...); the rest, batch_shape[k:], it sums over. Refuses any
    other shape of ``values``."""
    kept = values.dim() - 1
    if kept < 0 or kept > len(batch_shape) or values.shape[1:] != batch_shape[:kept]:
        raise EstimatorError(
            f"f returned values of shape {tuple(values.shape)} for samples of shape "
            f"{tuple(samples_shape)}; f must return (samples, *batch[:k])."
        )
    return batch_shape[kept:]


def check_temperature(tau: float) -> float:
    tau = float(tau)
    if not tau > 0 or tau != tau or tau == float("inf"):
        raise EstimatorError(f"The temperature tau must be a finite number > 0, got tau={tau}.")
    return tau


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


def declared_streams(latent: str) -> dict[str, NoiseStream]:
    """Every noise stream of the latent kind, by name, in the order ``draw_noise`` draws them: the kind's
    own (``KIND_STREAMS``), then those the estimator classes declare (``Estimator.noise_streams``) in the
    order the classes were created (the bundled estimators first, in the order ``estimators/__init__.py``
    imports them). A stream added later is drawn after the existing ones: their numbers do not change."""
    import estimators  # noqa: F401 - the bundled estimators declare their streams when imported

    streams: dict[str, NoiseStream] = {}
    for stream in KIND_STREAMS.get(latent, ()) + tuple(
        stream for cls in ESTIMATOR_CLASSES for stream in cls.__dict__.get("noise_streams", ())
    ):
        known = streams.get(stream.name)
        if known is not None and known != stream:
            raise EstimatorError(
                f"two estimators declare the noise stream {stream.name!r} differently ({known} and "
                f"{stream}); give the new one a name of its own."
            )
        if stream.latent == latent:
            streams.setdefault(stream.name, stream)
    return streams


def latent_shapes(params) -> tuple[str, Tensor, tuple[int, ...], tuple[int, ...]]:
    """(latent kind, a tensor of the parameters' dtype and device, batch shape, event shape) of ``params``."""
    if isinstance(params, Gaussian):
        batch = tuple(torch.broadcast_shapes(params.mean.shape, params.log_scale.shape))
        return "gaussian", params.mean, batch, ()
    if isinstance(params, Tensor) and params.dim() > 0:
        return "categorical", params, tuple(params.shape[:-1]), tuple(params.shape[-1:])
    raise EstimatorError(
        f"draw_noise knows categorical logits (a tensor (..., C)) and estimators.Gaussian, got "
        f"{type(params).__name__}."
    )


def draw_noise(
    params, samples: int, draws: int | None = None, generator: torch.Generator | None = None
) -> Noise:
    """Every noise stream an estimate with ``samples`` samples at ``params`` may read (common random numbers).

    The streams are those of the parameters' latent kind (``declared_streams``): for categorical logits
    ``(*B, C)``, ``uniform`` (S, *B, C), the uniforms behind D = argmax(θ + G(U)), and the streams the
    categorical estimators declare (DisARM's ``antithetic``, (⌈S/2⌉, *B)); for a Gaussian of batch shape B,
    ``normal`` (S, *B), the draw z = μ + σε of the score function, the pathwise estimator and the
    measure-valued derivative, and that derivative's own streams (``maxwell`` is (3, S, *B)). They are drawn
    one after the other from ``generator`` in that order. With ``draws`` = M every stream gets a leading
    dimension M (one noise per probe draw, for ``torch.func.vmap``). An estimate with fewer samples reads
    the first S rows: ``take_samples``.
    """
    latent, like, batch, event = latent_shapes(params)
    streams = declared_streams(latent)
    if not streams:
        raise EstimatorError(f"no estimator declares a noise stream for {latent} latents.")
    leading = () if draws is None else (int(draws),)
    options = {"generator": generator, "dtype": like.dtype, "device": like.device}
    return {
        name: (torch.randn if stream.normal else torch.rand)(
            (*leading, *stream.shape(samples, batch, event)), **options
        )
        for name, stream in streams.items()
    }


def take_samples(noise: Noise, samples: int, leading: int = 0) -> Noise:
    """The noise of the first ``samples`` samples of noise drawn for more (``leading``: dimensions before the
    sample dimension, 1 for noise drawn with ``draws``); common random numbers across sample counts."""
    import estimators  # noqa: F401 - the bundled estimators declare their streams when imported

    declared = {
        stream.name: stream for cls in ESTIMATOR_CLASSES for stream in cls.__dict__.get("noise_streams", ())
    }
    declared.update({stream.name: stream for streams in KIND_STREAMS.values() for stream in streams})
    taken = {}
    for name, value in noise.items():
        stream = declared.get(name, NoiseStream(name, ""))
        taken[name] = value.narrow(leading + len(stream.before), 0, stream.rows(samples))
    return taken


def gumbel_noise(shape: torch.Size | tuple[int, ...], like: Tensor, noise: Noise | None = None) -> Tensor:
    """g = −log(−log u), u ~ U(0, 1) (the stream ``uniform`` when ``noise`` is given), clamped away from 0
    and 1 so g stays finite."""
    tiny = torch.finfo(like.dtype).tiny
    uniform = noise_stream(noise, "uniform", shape, like).clamp(tiny, 1.0 - 1e-7)
    return -torch.log(-torch.log(uniform))


@functools.cache
def simd_floats() -> int:
    """The elements of one SIMD vector of torch's CPU kernels: 16 with AVX-512, else 8."""
    return 16 if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else 8


def softmax(values: Tensor, dim: int = -1) -> Tensor:
    """``values.softmax(dim)``, taken along a leading dimension where that is faster; equal up to rounding.

    On the CPU, torch's softmax over the innermost dimension handles a dimension shorter than one SIMD vector
    (``simd_floats``) row by row: over C = 8 classes of a (256, 1, 32, 4, 8) float32 tensor (a VAE probe's
    relaxed samples) forward and backward took 6.6 ms on one AVX-512 thread against 0.84 ms along a leading
    dimension (float64: 7.4 against 2.9 ms). So a short ``dim`` is moved to the front (softmax copies it
    contiguous; the result is a view moved back); elsewhere, and on a GPU, this is ``values.softmax(dim)``.
    """
    if values.device.type != "cpu" or values.dim() < 2 or values.shape[dim] >= simd_floats():
        return values.softmax(dim)
    return values.movedim(dim, 0).softmax(0).movedim(0, dim)


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


# --- estimators with parameters of their own ------------------------------------------------------------


@contextmanager
def recording(estimator: Estimator) -> Iterator[list[Any]]:
    """Within the block, every call of ``estimator`` appends its distribution parameters to the yielded list
    (what ``variance_backward`` differentiates with respect to, for a call inside a task's loss)."""
    calls: list[Any] = []

    def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
        calls.append(args[0] if args else next(iter(kwargs.values())))

    handle = estimator.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def variance_backward(loss: Tensor, params: Any, estimator: Estimator) -> Tensor:
    """``loss.backward()`` for the model, and the gradient of the variance objective into the estimator's
    own parameters φ (``Estimator.own_parameters``); returns the objective's value.

    The variance objective (Grathwohl et al. 2018, "Backpropagation through the Void", §3.3; Tucker et al.
    2017, "REBAR", §3.3) is ‖ĝ‖², ĝ = ∂loss/∂params the gradient estimate with respect to the distribution's
    parameters ``params`` (a tensor, a tuple of tensors, or a list of those: one per estimator call). For an
    unbiased estimator E‖ĝ‖² = tr Cov ĝ + ‖∇L‖², whose second term does not depend on φ, so ∂‖ĝ‖²/∂φ is an
    unbiased estimate of the gradient of the estimate's variance. Cost: one backward pass with
    ``create_graph`` to ĝ and one through it to φ, besides the model's ``loss.backward()``. The gradients it
    writes into φ replace whatever ``loss.backward()`` put there.
    """
    leaves = [leaf for leaf in tree_leaves(params) if isinstance(leaf, Tensor) and leaf.requires_grad]
    own = estimator.own_parameters()
    if not leaves or not own:
        loss.backward()
        return torch.zeros((), device=loss.device)
    estimate = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
    objective = sum((gradient**2).sum() for gradient in estimate if gradient is not None)
    if not isinstance(objective, Tensor) or not objective.requires_grad:  # φ does not enter this estimate
        loss.backward()
        return torch.zeros((), device=loss.device)
    gradients = torch.autograd.grad(objective, own, retain_graph=True, allow_unused=True)
    loss.backward()
    for parameter, gradient in zip(own, gradients, strict=True):
        parameter.grad = torch.zeros_like(parameter) if gradient is None else gradient.detach()
    return objective.detach()


# --- multi-sample objectives ----------------------------------------------------------------------------


class ImportanceWeighted:
    """A multi-sample objective: the negative K-sample importance-weighted bound (Burda, Grosse &
    Salakhutdinov 2016, "Importance Weighted Autoencoders")

        f(z_1, …, z_K) = −log (1/K) Σ_k exp w_k,    w_k = log p(x, z_k) − log q(z_k | x),

    whose expectation over z_k ~ q i.i.d. is −(the bound) ≥ −log p(x). The K draws of one data point are one
    more batch dimension of the distribution, ``set_dim`` (its parameters (*B, C) expanded to
    (*B[:set_dim], K, *B[set_dim:], C) by the task): an estimator that draws S samples draws S independent
    K-sets and calls this object as an ordinary f, samples (S, *B, *event) → (S, *B[:set_dim]). VIMCO (Mnih
    & Rezende 2016) reads the K log-weights themselves, ``weights(z)`` → (S, *B[:set_dim], K).

    ``log_weights(z, params)`` is the task's: the K draws first, z (K, *batch, *event), the distribution's
    parameters aligned with them (K, 1, …, *B', *event) → the K log-weights (K, *batch). Since w depends on
    the distribution's parameters through log q, the object is bound to the parameters of each estimator call
    (``bind``; ``Estimator.__call__`` does it), so that the gradient reaches exactly the tensors the estimate
    is taken at; unbound (a count of f's evaluations), it reads ``default()``.
    """

    def __init__(
        self,
        log_weights: Callable[[Tensor, Any], Tensor],
        set_dim: int,
        default: Callable[[], Any] | None = None,
        params: Any = None,
    ) -> None:
        self.log_weights, self.set_dim, self.default, self.params = log_weights, int(set_dim), default, params

    def bind(self, params: Any) -> ImportanceWeighted:
        return ImportanceWeighted(self.log_weights, self.set_dim, self.default, params)

    def weights(self, z: Tensor) -> Tensor:
        """The K log-weights of each of the S sets in z (S, *B, *event): shape (S, *B[:set_dim], K)."""
        params = self.params
        if params is None:
            if self.default is None:
                raise EstimatorError(
                    "a multi-sample objective needs the distribution's parameters: call it through an "
                    "estimator (which binds them) or give it a default."
                )
            params = self.default()
        axis = 1 + self.set_dim  # the K draws, after the sample dimension and the kept batch dimensions
        draws = z.movedim(axis, 0)  # (K, S, *B[:set_dim], *B[set_dim + 1:], *event)

        def aligned(tensor: Tensor) -> Tensor:
            moved = tensor.movedim(self.set_dim, 0)
            return moved.reshape(moved.shape[0], *[1] * (draws.dim() - moved.dim()), *moved.shape[1:])

        values = self.log_weights(draws, tree_map(aligned, params))  # (K, S, *B[:set_dim])
        return values.movedim(0, -1)

    def __call__(self, z: Tensor) -> Tensor:
        weights = self.weights(z)
        return -(torch.logsumexp(weights, -1) - math.log(weights.shape[-1]))
