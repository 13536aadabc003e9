"""The VAE task: L categorical latent variables of C classes, MLP encoder and decoder, binarized images.

Model (Jang, Gu & Poole 2017, "Categorical Reparameterization with Gumbel-Softmax", §4.2; the grid of
Liu et al. 2023, "ReinMax", uses C×L ∈ {8×4, 4×24, 8×16, 16×12, 64×8, 10×30}):

    q_φ(z | x) = Π_l Cat(z_l; softmax(encoder_φ(x)_l)),   p(z) = uniform over the C^L codes,
    p_θ(x | z) = Π_d Bernoulli(x_d; sigmoid(decoder_θ(z)_d)),

and the loss is the negative ELBO, averaged over a batch,

    −ELBO(x) = E_{q(z|x)}[−log p_θ(x | z)] + KL(q(z|x) ‖ p(z)),
    KL = Σ_l Σ_c q_lc log q_lc + L log C        (analytic; its gradient needs no estimator).

The estimator sees only the first term: ``objective(batch)`` maps one-hot (or relaxed) z of shape
(S, B, L, C) to −log p(x | z) of shape (S, B), so the ``exact`` estimator can enumerate the C^L codes of
each data point. While C^L ≤ 4096 that enumeration is the reference gradient of the probes
(``reference = "exact"``); above, ``reference = "none"`` and the bias fields stay NaN.

With ``latent="bernoulli"`` every latent variable is a bit: the encoder gives one logit ℓ per variable,
passed on as the two-class logits (0, ℓ), and the decoder reads the bit z_l[1]. Defaults: L = 4, C = 8 for
``categorical`` and L = 12 bits for ``bernoulli``, both 4096 codes.

Data: ``digits`` is scikit-learn's bundled 8×8 digits (1797 images, no download), pixels binarized at half
intensity, split once into train and test by a fixed permutation (seed 0, 20% test). ``mnist`` reads
local files (IDX, optionally gzipped, or a Keras-style ``mnist.npz``) and binarizes them statically at
pixel > 127. Training batches come from a generator seeded with the run's seed; the probe batch is the
first ``probe_size`` training images, the same in every run.

``evaluate()`` returns ``objective`` = test −ELBO: computed exactly by enumerating the codes while
C^L ≤ 4096 (with ``test_nll`` = exact −log p(x) = −log Σ_z p(z) p(x|z)); above that, estimated with
``eval_samples`` samples from q per test image drawn from a fixed generator (with ``test_nll_iwae``, the
importance-weighted bound of Burda et al. 2016 on −log p(x) from the same samples).
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.errors import ConfigError
from bench.tasks.base import Task
from estimators.exact import Exact, all_outcomes

EXACT_LIMIT = 4096  # the largest C^L for which the exact gradient is the probes' reference
TEST_FRACTION = 0.2  # of the digits, held out once with a fixed permutation
SPLIT_SEED = 0
TRAIN_EVAL_POINTS = 1000  # train −ELBO is measured on the first this many training images
EVAL_SEED = 12345  # Monte Carlo evaluation (C^L > 4096) draws from its own fixed generator
CHUNK = 512  # data points per chunk in evaluate()

MNIST_HELP = (
    "Download the MNIST image files train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz (e.g. from "
    "https://ossci-datasets.s3.amazonaws.com/mnist/) into one directory and pass it as task.path=DIR, or "
    "pass a Keras-style mnist.npz (arrays x_train and x_test; "
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz) as task.path=FILE."
)


def load_digits_binarized() -> tuple[Tensor, Tensor]:
    """scikit-learn's 8×8 digits, pixels in {0, 1} (intensity > 8 of 16), as (train, test) float tensors."""
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().data > 8).float()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SPLIT_SEED))
    test_count = round(TEST_FRACTION * len(images))
    return images[order[test_count:]], images[order[:test_count]]


def read_idx_images(path: Path) -> np.ndarray:
    """Images from an IDX file (``idx3-ubyte``, optionally gzipped) as a uint8 array (N, rows·columns)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise ConfigError(f"task.data=mnist: cannot read {path}: {error}. {MNIST_HELP}") from None
    if len(raw) < 16 or int.from_bytes(raw[:4], "big") != 0x0803:
        raise ConfigError(
            f"task.data=mnist: {path} is not an IDX image file (it must start with the magic number "
            f"0x00000803 and three sizes). {MNIST_HELP}"
        )
    count, rows, columns = (int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(3))
    if len(raw) - 16 != count * rows * columns:
        raise ConfigError(
            f"task.data=mnist: {path} announces {count} images of {rows}x{columns} pixels but holds "
            f"{len(raw) - 16} bytes of pixels instead of {count * rows * columns}; the file is truncated or "
            f"corrupt. {MNIST_HELP}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(count, rows * columns)


def find_idx(directory: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    raise ConfigError(f"task.data=mnist: neither {stem} nor {stem}.gz is in {directory}. {MNIST_HELP}")


def load_mnist_binarized(path: str | Path | None) -> tuple[Tensor, Tensor]:
    """MNIST from local files (a directory of IDX files or an .npz), binarized at pixel > 127."""
    if path is None:
        raise ConfigError(f"task.data=mnist needs task.path. {MNIST_HELP}")
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"task.data=mnist: {path} does not exist. {MNIST_HELP}")
    if path.is_dir():
        train = read_idx_images(find_idx(path, "train-images-idx3-ubyte"))
        test = read_idx_images(find_idx(path, "t10k-images-idx3-ubyte"))
    else:
        try:
            with np.load(path, allow_pickle=False) as archive:
                train, test = archive["x_train"], archive["x_test"]
        except KeyError:
            raise ConfigError(
                f"task.data=mnist: {path} lacks the arrays x_train and x_test. {MNIST_HELP}"
            ) from None
        except (OSError, ValueError, EOFError) as error:  # EOFError: an empty file
            raise ConfigError(
                f"task.data=mnist: {path} is not a readable .npz file ({error}). {MNIST_HELP}"
            ) from None
        train, test = train.reshape(len(train), -1), test.reshape(len(test), -1)
    if len(train) == 0 or len(test) == 0 or train.shape[1] != test.shape[1]:
        raise ConfigError(
            f"task.data=mnist: expected non-empty train and test images of the same size, got "
            f"{train.shape} and {test.shape} from {path}. {MNIST_HELP}"
        )
    return torch.from_numpy(train > 127).float(), torch.from_numpy(test > 127).float()


class VAE(Task):
    latent = "categorical"
    reference = "exact"  # the default configuration; the instance says "none" when C^L > EXACT_LIMIT

    def __init__(
        self,
        data: str = "digits",
        path: str | None = None,
        latent: str = "categorical",
        variables: int | None = None,
        classes: int | None = None,
        hidden: int = 128,
        batch_size: int = 64,
        probe_size: int = 32,
        eval_samples: int = 64,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if latent not in ("categorical", "bernoulli"):
            raise ConfigError(f"task.latent must be categorical or bernoulli, got {latent!r}.")
        self.bernoulli = latent == "bernoulli"
        if self.bernoulli and classes not in (None, 2):
            raise ConfigError(
                f"task.latent=bernoulli has 2 classes per variable; got task.classes={classes}."
            )
        variables = variables if variables is not None else (12 if self.bernoulli else 4)
        classes = classes if classes is not None else (2 if self.bernoulli else 8)
        for key, value, least in [
            ("variables", variables, 1),
            ("classes", classes, 2),
            ("hidden", hidden, 1),
            ("batch_size", batch_size, 1),
            ("probe_size", probe_size, 1),
            ("eval_samples", eval_samples, 1),
        ]:
            if int(value) != value or value < least:
                raise ConfigError(f"task.{key} must be an integer >= {least}, got task.{key}={value}.")
        if data == "digits":
            train, test = load_digits_binarized()
        elif data == "mnist":
            train, test = load_mnist_binarized(path)
        else:
            raise ConfigError(f"task.data must be digits (bundled) or mnist (local files), got {data!r}.")
        for key, value in [("batch_size", batch_size), ("probe_size", probe_size)]:
            if value > len(train):
                raise ConfigError(f"task.{key}={value} exceeds the {len(train)} training images of {data}.")
        self.variables, self.classes = int(variables), int(classes)
        self.batch_size, self.probe_size, self.eval_samples = (
            int(batch_size),
            int(probe_size),
            int(eval_samples),
        )
        self.codes = self.classes**self.variables
        self.enumerable = self.codes <= EXACT_LIMIT
        self.reference = "exact" if self.enumerable else "none"
        self.register_buffer("train_images", train, persistent=False)
        self.register_buffer("test_images", test, persistent=False)
        pixels = train.shape[1]
        per_variable = 1 if self.bernoulli else self.classes
        self.encoder = nn.Sequential(
            nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, self.variables * per_variable)
        )
        self.decoder = nn.Sequential(
            nn.Linear(self.variables * per_variable, hidden), nn.ReLU(), nn.Linear(hidden, pixels)
        )
        self.generator = torch.Generator().manual_seed(int(seed))
        self.order = torch.empty(0, dtype=torch.long)
        self.position = 0

    # --- data -------------------------------------------------------------------------------------------

    def train_batch(self, step: int) -> Tensor:
        """The next ``batch_size`` training images, in epochs of fresh seeded permutations."""
        if self.position + self.batch_size > len(self.order):
            self.order = torch.randperm(len(self.train_images), generator=self.generator)
            self.position = 0
        index = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return self.train_images[index]

    def probe_batch(self) -> Tensor:
        return self.train_images[: self.probe_size]

    # --- the objective ----------------------------------------------------------------------------------

    def distribution(self, batch: Tensor) -> Tensor:
        """Encoder logits, shape (B, L, C)."""
        logits = self.encoder(batch)
        if self.bernoulli:
            return torch.stack([torch.zeros_like(logits), logits], dim=-1)
        return logits.unflatten(-1, (self.variables, self.classes))

    def decode(self, z: Tensor) -> Tensor:
        """Decoder logits of the pixels for codes z of shape (..., L, C)."""
        return self.decoder(z[..., 1] if self.bernoulli else z.flatten(-2))

    def objective(self, batch: Tensor):
        def negative_log_likelihood(z: Tensor) -> Tensor:
            if z.dim() >= 3 and z.shape[-3] > 1 and z.stride(-3) == 0:
                # The same codes for every image (the exact estimator's enumeration is a broadcast view):
                # decode each code once; −log p(x|z) = Σ_d softplus(l_d) − x·l for every image x.
                logits = self.decode(z.select(-3, 0))
                return F.softplus(logits).sum(-1, keepdim=True) - logits @ batch.T
            logits = self.decode(z)
            # = binary_cross_entropy_with_logits, written out: under torch.func.vmap (the vectorized probe)
            # the fused kernel is decomposed anyway, and this form is measurably faster there.
            return (F.softplus(logits) - logits * batch).sum(-1)

        return negative_log_likelihood

    def deterministic(self, params: Tensor, batch: Any = None) -> Tensor:
        """KL(q(z|x) ‖ uniform), analytic, averaged over the batch."""
        return kl_to_uniform(params).mean()

    # --- measurement ------------------------------------------------------------------------------------

    def probed_parameters(self) -> dict[str, Tensor]:
        return {f"encoder.{name}": parameter for name, parameter in self.encoder.named_parameters()}

    def reference_gradient(self, batch: Tensor) -> list[Tensor] | None:
        if not self.enumerable:
            return None
        with torch.enable_grad():
            loss = self.loss(Exact(max_outcomes=EXACT_LIMIT), 1, batch)
            return list(torch.autograd.grad(loss, list(self.probed_parameters().values())))

    def all_codes(self) -> Tensor:
        """Every code as one-hot vectors, shape (C^L, L, C)."""
        index = all_outcomes(self.classes, self.variables, self.train_images.device)
        return torch.zeros(len(index), self.variables, self.classes).scatter(-1, index.unsqueeze(-1), 1.0)

    def enumerated_terms(self, images: Tensor) -> dict[str, Tensor]:
        """Per image, by enumerating every code: E_q[−log p(x|z)], KL, −ELBO and −log p(x)."""
        codes = self.all_codes()  # (K, L, C)
        logits = self.decode(codes)  # (K, D): the decoder never sees x, so one pass serves every image
        log_likelihood = images @ logits.T - F.softplus(logits).sum(-1)  # (N, K)
        encoder_logits = self.distribution(images).log_softmax(-1)  # (N, L, C)
        log_q = encoder_logits.flatten(-2) @ codes.flatten(-2).T  # (N, K): Σ_l log q(z_l | x), one-hot z
        reconstruction = -(log_q.exp() * log_likelihood).sum(-1)
        kl = kl_to_uniform(encoder_logits)
        log_marginal = torch.logsumexp(log_likelihood, -1) - self.variables * math.log(self.classes)
        return {"reconstruction": reconstruction, "kl": kl, "elbo": reconstruction + kl, "nll": -log_marginal}

    def sampled_terms(self, images: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Per image, from ``eval_samples`` draws z ~ q: estimated E_q[−log p(x|z)], exact KL, IWAE bound."""
        encoder_logits = self.distribution(images).log_softmax(-1)
        uniform = torch.rand((self.eval_samples, *encoder_logits.shape), generator=generator)
        index = (encoder_logits - torch.log(-torch.log(uniform.clamp_min(1e-20)))).argmax(-1)
        z = torch.zeros_like(uniform).scatter(-1, index.unsqueeze(-1), 1.0)  # (K, N, L, C)
        log_likelihood = -self.objective(images)(z)  # (K, N)
        log_q = (z * encoder_logits).sum((-1, -2))
        log_prior = -self.variables * math.log(self.classes)
        log_weights = log_likelihood + log_prior - log_q
        bound = torch.logsumexp(log_weights, 0) - math.log(self.eval_samples)
        reconstruction = -log_likelihood.mean(0)
        kl = kl_to_uniform(encoder_logits)
        return {"reconstruction": reconstruction, "kl": kl, "elbo": reconstruction + kl, "nll": -bound}

    def measure(self, images: Tensor) -> dict[str, float]:
        generator = torch.Generator().manual_seed(EVAL_SEED)
        parts: list[dict[str, Tensor]] = []
        for chunk in images.split(CHUNK):
            parts.append(
                self.enumerated_terms(chunk) if self.enumerable else self.sampled_terms(chunk, generator)
            )
        return {key: float(torch.cat([part[key] for part in parts]).mean()) for key in parts[0]}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        test = self.measure(self.test_images)
        train = self.measure(self.train_images[:TRAIN_EVAL_POINTS])
        return {
            "objective": test["elbo"],
            "test_reconstruction": test["reconstruction"],
            "test_kl": test["kl"],
            "test_nll" if self.enumerable else "test_nll_iwae": test["nll"],
            "train_negative_elbo": train["elbo"],
        }


def kl_to_uniform(logits: Tensor) -> Tensor:
    """KL(Cat(softmax(logits)) ‖ uniform) summed over the variables: Σ q log q + L log C; shape (B,)."""
    log_q = logits.log_softmax(-1)
    return (log_q.exp() * log_q).sum((-1, -2)) + logits.shape[-2] * math.log(logits.shape[-1])
