"""The VQ-VAE task (van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning").

An MLP encoder maps an image x to P latent vectors z_e ∈ R^d; each is replaced by its nearest code
z_q = e_k of a codebook of K codes (the ``codebook`` latent kind, ``estimators.codebook.Codebook``); an MLP
decoder reads the P codes and returns Bernoulli logits for the pixels. The training loss per image is

    −log p(x | z_q) + ‖sg[z_e] − e_k‖² + β ‖z_e − sg[e_k]‖²          (codebook_update: loss, β = 0.25)
    −log p(x | z_q) + β ‖z_e − sg[e_k]‖²,  codebook by EMA            (codebook_update: ema)
    −log p(x | z_q) + ‖sg[z_e] − C_k‖² + β ‖z_e − sg[C_k]‖²,  C = E Wᵀ + b (codebook_update: linear)
    −log p(x | z_q),  z_e bounded, its code the nearest point of a grid  (codebook_update: fsq)

summed over the P latent vectors and averaged over the batch. ``linear`` is SimVQ (Zhu et al. 2024): a frozen
random codebook E times a learned linear map, trained by the codebook loss
(``estimators.codebook.LinearCodebook``). ``fsq`` is finite scalar quantization (Mentzer et al. 2024): the
encoder outputs P vectors of d' = len(``levels``) coordinates, each bounded and quantized to L_i levels, the
codes are the fixed grid of Π_i L_i points (``estimators.codebook.FiniteScalarQuantizer``; ``dim``, ``codes``
and ``codebook_init`` are not used), and there is no codebook or commitment loss (the paper uses none). In
both papers the gradient crosses the quantizer by straight-through: ``estimator=vq_st``; the other codebook
estimators (the rotation trick, stochastic VQ) combine with them as with a plain codebook.

The gradient estimator decides how the reconstruction term's gradient crosses the quantizer; the codebook
and commitment terms are the task's ``deterministic`` part (they use the nearest code, also for
``vq_stochastic``, whose sampled code only feeds the decoder). The EMA update
(``estimators.codebook.EMACodebook``) runs in ``after_step`` on the encoder outputs of the step's batch after
the optimizer step.

The codebook starts at U(−1/K, 1/K) (``codebook_init: uniform``, as in the reference implementations) or
at the encoder outputs of random training images (``codebook_init: data``).

There is no true gradient (``reference: none``): the probe draws each of its M estimates on a fresh training
batch (``probe_batches``), so ``grad_variance`` is the spread of the estimate across data batches (plus the
sampling noise of a stochastic quantizer), and the bias fields are NaN.

Metrics. ``evaluate()`` (at every probe) on the held-out images: ``objective`` = reconstruction loss −log p(x
| z_q) per image (nats; the headline ``final_loss``), ``validation_objective`` the same on the validation
images, ``quantization_error`` = mean ‖z_e − e_k‖² per latent vector (for FSQ: between the bounded
coordinates and their grid point), ``perplexity`` = the codebook perplexity exp(entropy of the code
frequencies) (K when all codes are used equally; for FSQ over its implied grid of Π_i L_i codes),
``codes_used`` = fraction of the K codes assigned to at least one held-out latent vector, and
``dead_codes`` = number of codes assigned to no latent vector of the training images (at most
``usage_images`` of them). ``after_step`` records the same quantities on each
training batch as ``train_reconstruction``, ``train_quantization_error``, ``train_perplexity`` and
``train_codes_used`` (every ``log_every`` steps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.tasks.base import Task
from bench.tasks.checks import check_arguments, number, one_of, refuse, whole
from bench.tasks.data import EpochSampler, load_images, mlp, with_replacement
from estimators.codebook import (
    Codebook,
    EMACodebook,
    FiniteScalarQuantizer,
    LinearCodebook,
    code_usage,
    vq_losses,
)

CODEBOOK_UPDATES = ("loss", "ema", "linear", "fsq")
CODEBOOK_INITS = ("uniform", "data")


class VQVAE(Task):
    latent = "codebook"
    reference = "none"

    def __init__(
        self,
        data: str = "digits",
        path: str | None = None,
        latents: int = 4,
        mirror: str | None = None,
        dim: int = 8,
        codes: int = 64,
        hidden: int = 128,
        batch_size: int = 64,
        beta: float = 0.25,
        codebook_update: str = "loss",
        decay: float = 0.99,
        epsilon: float = 1e-5,
        codebook_init: str = "uniform",
        usage_images: int = 10000,
        levels: tuple[int, ...] | list[int] = (4, 4, 4),
    ) -> None:
        super().__init__()
        check_arguments(
            dict(
                latents=latents,
                dim=dim,
                codes=codes,
                hidden=hidden,
                batch_size=batch_size,
                beta=beta,
                codebook_update=codebook_update,
                decay=decay,
                epsilon=epsilon,
                codebook_init=codebook_init,
                usage_images=usage_images,
            ),
            {
                "latents": whole(least=1),
                "dim": whole(least=1),
                "codes": whole(least=2).explained("A codebook of one code carries no information."),
                "hidden": whole(least=1),
                "batch_size": whole(least=2),
                "beta": number(least=0).explained("It is the commitment weight."),
                "codebook_update": one_of(CODEBOOK_UPDATES).explained(
                    "loss: codebook loss |sg[z_e] - e|^2; ema: exponential moving averages, van den Oord et "
                    "al. 2017 A.1; linear: SimVQ's frozen codebook times a learned linear map; fsq: finite "
                    "scalar quantization to the grid of task.levels."
                ),
                "decay": number(least=0, below=1).explained("It is the EMA decay."),
                "epsilon": number(above=0).explained("It is the EMA's Laplace smoothing."),
                "codebook_init": one_of(CODEBOOK_INITS).explained(
                    "uniform: U(-1/K, 1/K); data: encoder outputs of random training images at the start."
                ),
                "usage_images": whole(least=1),
            },
        )
        if codebook_update in ("linear", "fsq") and codebook_init != "uniform":
            refuse(
                "codebook_init",
                codebook_init,
                f"uniform (the default) with task.codebook_update={codebook_update}: "
                + (
                    "SimVQ's frozen codebook is drawn from N(0, 1/d)"
                    if codebook_update == "linear"
                    else "FSQ's codes are a fixed grid"
                ),
            )
        quantizer = FiniteScalarQuantizer(levels) if codebook_update == "fsq" else None
        train, validation, test = load_images(data, path, mirror=mirror)
        if train.shape[0] < batch_size:
            refuse("batch_size", batch_size, f"at most the {train.shape[0]} training images")
        if codebook_init == "data" and train.shape[0] * latents < codes:
            refuse(
                "codes",
                codes,
                f"at most the {train.shape[0] * latents} encoder outputs of the training images with "
                "task.codebook_init=data",
            )
        self.register_buffer("train_images", train, persistent=False)
        self.register_buffer("validation_images", validation, persistent=False)
        self.register_buffer("test_images", test, persistent=False)
        self.latents, self.dim, self.codes = int(latents), int(dim), int(codes)
        if quantizer is not None:  # FSQ: d' coordinates per vector, a grid of Π L_i codes
            self.dim, self.codes = len(quantizer.levels), quantizer.codes
        self.batch_size, self.beta, self.usage_images = int(batch_size), float(beta), int(usage_images)
        self.codebook_update = codebook_update
        pixels = train.shape[1]
        self.encoder = mlp(pixels, hidden, self.latents * self.dim)
        self.decoder = mlp(self.latents * self.dim, hidden, pixels)
        self.sampler = EpochSampler(len(train), self.batch_size)
        if codebook_update == "linear":
            self.linear_codebook = LinearCodebook(self.codes, self.dim)
            return
        if quantizer is not None:
            self.quantizer = quantizer
            self.register_buffer("grid", quantizer.codebook(), persistent=False)
            return
        if codebook_init == "uniform":
            # U(−1/K, 1/K), as in the reference VQ-VAE implementations (Sonnet's VectorQuantizer).
            initial = torch.empty(self.codes, self.dim).uniform_(-1 / self.codes, 1 / self.codes)
        else:
            # K encoder outputs of random training images: every code starts where some z_e is.
            with torch.no_grad():
                candidates = self.encode(train[torch.randperm(train.shape[0])[: self.codes]])
            candidates = candidates.reshape(-1, self.dim)
            initial = candidates[torch.randperm(candidates.shape[0])[: self.codes]].clone()
        if codebook_update == "ema":
            self.ema = EMACodebook(self.codes, self.dim, decay, epsilon)
            self.ema.reset(initial)
        else:
            self.embedding = nn.Parameter(initial)

    # -- the model -----------------------------------------------------------------------------------------

    @property
    def codebook(self) -> Tensor:
        """The K codes, shape (K, d): the learned codebook, SimVQ's E Wᵀ + b, or FSQ's grid."""
        if self.codebook_update == "ema":
            return self.ema.codebook
        if self.codebook_update == "linear":
            return self.linear_codebook()
        if self.codebook_update == "fsq":
            return self.grid
        return self.embedding

    def encode(self, images: Tensor) -> Tensor:
        """Encoder outputs z_e, shape (N, P, d) (for FSQ, bounded: ``FiniteScalarQuantizer.bound``)."""
        z_e = self.encoder(images).unflatten(-1, (self.latents, self.dim))
        return self.quantizer.bound(z_e) if self.codebook_update == "fsq" else z_e

    def reconstruction(self, z_q: Tensor, images: Tensor) -> Tensor:
        """−log p(x | z_q) per image: Bernoulli likelihood summed over pixels, shape z_q.shape[:-2]."""
        logits = self.decoder(z_q.flatten(-2))
        targets = images.expand_as(logits)
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1)

    # -- the task protocol -----------------------------------------------------------------------------------

    def distribution(self, batch: Tensor) -> Codebook:
        return Codebook(self.encode(batch), self.codebook)

    def objective(self, batch: Tensor):
        return lambda z_q: self.reconstruction(z_q, batch)

    def deterministic(self, params: Codebook, batch: Tensor) -> Tensor:
        if self.codebook_update == "fsq":  # no codebook to learn, nothing to commit to (Mentzer et al.)
            return torch.zeros((), device=params.z_e.device)
        codebook_loss, commitment_loss = vq_losses(params)
        total = self.beta * commitment_loss.sum(-1).mean()
        if self.codebook_update in ("loss", "linear"):
            total = total + codebook_loss.sum(-1).mean()
        return total

    def train_batch(self, step: int, generator: torch.Generator | None = None) -> Tensor:
        """The next ``batch_size`` training images, in epochs of permutations drawn from ``generator``."""
        return self.train_images[self.sampler.next_indices(generator)]

    def probe_batch(self) -> Tensor:
        return self.train_images[: self.batch_size]

    def probe_batches(self, draws: int) -> list[Tensor]:
        """A fresh training batch per draw: with no true gradient, the spread across data is measured."""
        size, device = self.train_images.shape[0], self.train_images.device
        return [
            self.train_images[with_replacement(size, self.batch_size, None, device)] for _ in range(draws)
        ]

    def probed_parameters(self) -> dict[str, Tensor]:
        return {f"encoder.{name}": parameter for name, parameter in self.encoder.named_parameters()}

    @torch.no_grad()
    def quantize(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(z_e, nearest-code index, z_q) for ``images`` at the current parameters."""
        params = self.distribution(images)
        index = params.nearest()
        return params.z_e, index, self.codebook[index]

    @torch.no_grad()
    def statistics(self, images: Tensor) -> dict[str, float]:
        z_e, index, z_q = self.quantize(images)
        usage = code_usage(index, self.codes)
        return {
            "reconstruction": float(self.reconstruction(z_q, images).mean()),
            "quantization_error": float(((z_e - z_q) ** 2).sum(-1).mean()),
            "perplexity": usage["perplexity"],
            "codes_used": usage["codes_used"],
        }

    @torch.no_grad()
    def after_step(self, step: int, batch: Tensor) -> dict[str, float]:
        if self.codebook_update == "ema":
            z_e, index, _ = self.quantize(batch)
            self.ema.update(z_e, index)
        return {f"train_{name}": value for name, value in self.statistics(batch).items()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        test = self.statistics(self.test_images)
        validation = self.statistics(self.validation_images)
        _, train_index, _ = self.quantize(self.train_images[: self.usage_images])
        return {
            "objective": test.pop("reconstruction"),
            "validation_objective": validation["reconstruction"],
            **test,
            "dead_codes": code_usage(train_index, self.codes)["unused_codes"],
        }
