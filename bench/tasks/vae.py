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
each data point. The probes' reference gradient (``reference``): ``auto`` (the default) enumerates while
C^L ≤ 4096 (``exact``) and above takes the mean of ``reference_draws`` independent draws of an unbiased
estimator (``monte_carlo``: local expectation gradients or RLOO, ``bench.run.probe.reference``);
``monte_carlo`` forces the latter on a small task (to validate it against the exact one), ``none`` turns
the bias fields off.

With ``latent="bernoulli"`` every latent variable is a bit: the encoder gives one logit ℓ per variable,
passed on as the two-class logits (0, ℓ), and the decoder reads the bit z_l[1]. Defaults: L = 4, C = 8 for
``categorical`` and L = 12 bits for ``bernoulli``, both 4096 codes.

Networks: ``hidden`` is one width or a list of widths; the encoder is pixels → widths → L·C (L for
``bernoulli``), the decoder L·C → widths reversed → pixels, each hidden layer followed by ``activation``
(``relu``, ``leaky_relu`` with ``negative_slope``, ``tanh``); ``hidden=[]`` is one linear map each way.
The prior p(z) is uniform (``prior="uniform"``) or a factorized categorical with learned logits
(``prior="learned"``, as in REBAR and DisARM: p(z) = Π_l softmax(λ_l)[z_l], λ starting at 0), whose KL
term Σ_l Σ_c q_lc (log q_lc − log p_lc) stays analytic.

Data (``bench.tasks.data``): ``digits`` (scikit-learn's bundled 8×8 digits), ``digits28`` (the same,
upscaled to 28×28: an offline stand-in, not MNIST), or ``mnist``, ``fashion_mnist``, ``omniglot`` from local
files, made binary by ``binarization``: ``threshold``, ``static`` (one fixed Bernoulli draw), ``dynamic``
(each training batch drawn Bernoulli(grey) from the run's data generator; validation, test and the training
images probed or evaluated binarized once) or ``none`` (grey targets). Training batches come in epochs of
permutations drawn from the run's seeded data generator; the probe batch is the first ``probe_size``
training images, the same in every run.

``evaluate()`` returns ``objective`` = test −ELBO and ``validation_objective`` = validation −ELBO (what
time-to-target and tuning read, so that the test set chooses nothing), computed exactly by enumerating the
codes while C^L ≤ 4096 (with ``test_nll`` = exact −log p(x) = −log Σ_z p(z) p(x|z)); above that, estimated
with ``eval_samples`` samples from q per test image drawn from a fixed generator (with ``test_nll_iwae``,
the importance-weighted bound of Burda et al. 2016 on −log p(x) from the same samples).

``objective="iwae"`` trains the K-sample importance-weighted bound (Burda, Grosse & Salakhutdinov 2016)
instead, K = ``iwae_samples``: the loss is −E[log (1/K) Σ_k exp w_k], w_k = log p(x, z_k) − log q(z_k | x),
z_1 … z_K ~ q i.i.d., with no separate KL term. ``distribution`` then gives the encoder logits expanded to
(B, K, L, C), one copy per draw of a K-set, and ``objective`` a multi-sample objective
(``estimators.base.ImportanceWeighted``) that returns the K log-weights of each image; an estimator drawing S
samples draws S independent K-sets. The exact reference enumerates C^(K·L) outcomes (while that is at most
4096); ``evaluate`` still reports the test −ELBO as ``objective``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.tasks.base import DEFAULT_REFERENCE_DRAWS, Task, choose_reference
from bench.tasks.checks import Rule, check_arguments, number, one_of, refuse, whole
from bench.tasks.data import (
    ACTIVATIONS,
    BINARIZATIONS,
    EpochSampler,
    binarize_batch,
    fixed_binarization,
    load_images,
    mlp,
    widths,
)
from estimators.base import ImportanceWeighted
from estimators.exact import Exact, all_outcomes

EXACT_LIMIT = 4096  # the largest C^L for which the exact gradient is the probes' reference
LATENTS = ("categorical", "bernoulli")
PRIORS = ("uniform", "learned")
OBJECTIVES = ("elbo", "iwae")
TRAIN_EVAL_POINTS = 1000  # train −ELBO is measured on the first this many training images
EVAL_SEED = 12345  # Monte Carlo evaluation (C^L > 4096) draws from its own fixed generator
CHUNK = 512  # data points per chunk in evaluate()


class VAE(Task):
    latent = "categorical"
    reference = "exact"  # the default configuration; the instance says what its setting resolved to

    def __init__(
        self,
        data: str = "digits",
        path: str | None = None,
        latent: str = "categorical",
        mirror: str | None = None,
        variables: int | None = None,
        classes: int | None = None,
        hidden: int | list[int] = 128,
        batch_size: int = 64,
        probe_size: int = 32,
        eval_samples: int = 64,
        reference: str = "auto",
        reference_draws: int = DEFAULT_REFERENCE_DRAWS,
        binarization: str = "threshold",
        activation: str = "relu",
        negative_slope: float = 0.01,
        prior: str = "uniform",
        objective: str = "elbo",
        iwae_samples: int = 5,
    ) -> None:
        super().__init__()
        check_arguments(
            dict(
                latent=latent,
                hidden=hidden,
                binarization=binarization,
                activation=activation,
                negative_slope=negative_slope,
                prior=prior,
                objective=objective,
                iwae_samples=iwae_samples,
            ),
            {
                "latent": one_of(LATENTS),
                "hidden": HIDDEN,
                "binarization": one_of(BINARIZATIONS).explained(
                    "threshold: pixel > 1/2; static: one fixed Bernoulli draw; dynamic: a fresh draw for "
                    "every training batch; none: the grey levels are the targets."
                ),
                "activation": one_of(ACTIVATIONS),
                "negative_slope": number(least=0),
                "prior": one_of(PRIORS).explained(
                    "uniform: p(z) uniform over the codes; learned: factorized, with trained logits."
                ),
                "objective": one_of(OBJECTIVES).explained(
                    "elbo: the negative ELBO; iwae: the negative K-sample importance-weighted bound, "
                    "K = task.iwae_samples."
                ),
                "iwae_samples": whole(least=1),
            },
        )
        self.bernoulli = latent == "bernoulli"
        if self.bernoulli and classes not in (None, 2):
            refuse("classes", classes, "2 (or null) with task.latent=bernoulli: a bit has 2 classes")
        variables = variables if variables is not None else (12 if self.bernoulli else 4)
        classes = classes if classes is not None else (2 if self.bernoulli else 8)
        arguments = dict(
            variables=variables,
            classes=classes,
            batch_size=batch_size,
            probe_size=probe_size,
            eval_samples=eval_samples,
            reference_draws=reference_draws,
        )
        check_arguments(
            arguments,
            {
                "variables": whole(least=1),
                "classes": whole(least=2),
                "batch_size": whole(least=1),
                "probe_size": whole(least=1),
                "eval_samples": whole(least=1),
                "reference_draws": whole(least=2),
            },
        )
        train, validation, test = load_images(data, path, binarization, mirror=mirror)
        for key in ("batch_size", "probe_size"):
            if arguments[key] > len(train):
                refuse(key, arguments[key], f"at most the {len(train)} training images of task.data={data}")
        self.variables, self.classes = int(variables), int(classes)
        self.batch_size, self.probe_size, self.eval_samples = (
            int(batch_size),
            int(probe_size),
            int(eval_samples),
        )
        self.codes = self.classes**self.variables
        self.enumerable = self.codes <= EXACT_LIMIT
        # A multi-sample objective (objective=iwae): K draws per image, C^(K·L) outcomes to enumerate.
        self.multi_sample = objective == "iwae"
        self.iwae_samples = int(iwae_samples) if self.multi_sample else 1
        outcomes = self.codes**self.iwae_samples
        self.reference_enumerable = outcomes <= EXACT_LIMIT
        self.reference = choose_reference(reference, outcomes, EXACT_LIMIT)
        self.reference_draws = int(reference_draws)
        self.data_name, self.binarization = str(data), binarization
        self.dynamic = binarization == "dynamic"
        self.register_buffer("train_images", train, persistent=False)
        self.register_buffer("validation_images", validation, persistent=False)
        self.register_buffer("test_images", test, persistent=False)
        # The training images a probe or an evaluation reads: fixed, also under dynamic binarization.
        seen = max(self.probe_size, TRAIN_EVAL_POINTS)
        fixed = fixed_binarization(train[:seen], "train") if self.dynamic else train[:seen]
        self.register_buffer("fixed_train_images", fixed, persistent=False)
        pixels = train.shape[1]
        per_variable = 1 if self.bernoulli else self.classes
        layers = widths(hidden)
        self.encoder = mlp(pixels, layers, self.variables * per_variable, activation, negative_slope)
        self.decoder = mlp(self.variables * per_variable, layers[::-1], pixels, activation, negative_slope)
        # Learned prior logits λ: (L, C), or (L,) for bits (two-class logits (0, λ_l)); None: uniform.
        shape = (self.variables,) if self.bernoulli else (self.variables, self.classes)
        self.prior_logits = torch.nn.Parameter(torch.zeros(shape)) if prior == "learned" else None
        self.sampler = EpochSampler(len(train), self.batch_size)

    # --- data -------------------------------------------------------------------------------------------

    def train_batch(self, step: int, generator: torch.Generator | None = None) -> Tensor:
        """The next ``batch_size`` training images, in epochs of permutations drawn from ``generator``; with
        dynamic binarization their pixels are drawn from it too."""
        batch = self.train_images[self.sampler.next_indices(generator)]
        return binarize_batch(batch, generator) if self.dynamic else batch

    def probe_batch(self) -> Tensor:
        return self.fixed_train_images[: self.probe_size]

    # --- the objective ----------------------------------------------------------------------------------

    def distribution(self, batch: Tensor) -> Tensor:
        """Encoder logits, shape (B, L, C); with objective=iwae expanded to (B, K, L, C), one per draw."""
        logits = self.encode(batch)
        if self.multi_sample:
            return logits.unsqueeze(1).expand(-1, self.iwae_samples, -1, -1)
        return logits

    def encode(self, batch: Tensor) -> Tensor:
        """Encoder logits, shape (B, L, C)."""
        logits = self.encoder(batch)
        if self.bernoulli:
            return torch.stack([torch.zeros_like(logits), logits], dim=-1)
        return logits.unflatten(-1, (self.variables, self.classes))

    def decode(self, z: Tensor) -> Tensor:
        """Decoder logits of the pixels for codes z of shape (..., L, C)."""
        return self.decoder(z[..., 1] if self.bernoulli else z.flatten(-2))

    def objective(self, batch: Tensor):
        if self.multi_sample:
            return ImportanceWeighted(
                self.importance_log_weights(batch), set_dim=1, default=lambda: self.distribution(batch)
            )
        return self.negative_log_likelihood(batch)

    def importance_log_weights(self, batch: Tensor):
        """The K log-weights w = log p(x | z) + log p(z) − log q(z | x) of codes z (K, ..., B, L, C), with the
        encoder logits aligned with them: shape (K, ..., B)."""
        negative_log_likelihood = self.negative_log_likelihood(batch)

        def log_weights(z: Tensor, logits: Tensor) -> Tensor:
            log_q = (z * logits.log_softmax(-1)).sum((-1, -2))
            return -negative_log_likelihood(z) + self.code_log_prior(z) - log_q

        return log_weights

    def negative_log_likelihood(self, batch: Tensor):
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
        """KL(q(z|x) ‖ p(z)), analytic, averaged over the batch; none for objective=iwae."""
        if self.multi_sample:
            return torch.zeros((), device=params.device)
        return self.kl(params).mean()

    def log_prior(self) -> Tensor | None:
        """log p(z_l = c), shape (L, C), for a learned prior; None for the uniform one."""
        if self.prior_logits is None:
            return None
        logits = self.prior_logits
        if self.bernoulli:
            logits = torch.stack([torch.zeros_like(logits), logits], dim=-1)
        return logits.log_softmax(-1)

    def kl(self, logits: Tensor) -> Tensor:
        """KL(q ‖ p) summed over the variables, per data point: shape (B,)."""
        log_prior = self.log_prior()
        if log_prior is None:
            return kl_to_uniform(logits)
        log_q = logits.log_softmax(-1)
        return (log_q.exp() * (log_q - log_prior)).sum((-1, -2))

    def code_log_prior(self, codes: Tensor) -> Tensor | float:
        """log p(z) of one-hot codes (..., L, C): a tensor (...) for a learned prior, a number if uniform."""
        log_prior = self.log_prior()
        if log_prior is None:
            return -self.variables * math.log(self.classes)
        return (codes * log_prior).sum((-1, -2))

    # --- measurement ------------------------------------------------------------------------------------

    def probed_parameters(self) -> dict[str, Tensor]:
        return {f"encoder.{name}": parameter for name, parameter in self.encoder.named_parameters()}

    def reference_gradient(self, batch: Tensor) -> list[Tensor] | None:
        if not self.reference_enumerable:
            return None
        with torch.enable_grad():
            loss = self.loss(Exact(max_outcomes=EXACT_LIMIT), 1, batch)
            return list(torch.autograd.grad(loss, list(self.probed_parameters().values())))

    def all_codes(self) -> Tensor:
        """Every code as one-hot vectors, shape (C^L, L, C)."""
        index = all_outcomes(self.classes, self.variables, self.train_images.device)
        codes = torch.zeros(len(index), self.variables, self.classes, device=index.device)
        return codes.scatter(-1, index.unsqueeze(-1), 1.0)

    def enumerated_terms(self, images: Tensor) -> dict[str, Tensor]:
        """Per image, by enumerating every code: E_q[−log p(x|z)], KL, −ELBO and −log p(x)."""
        codes = self.all_codes()  # (K, L, C)
        logits = self.decode(codes)  # (K, D): the decoder never sees x, so one pass serves every image
        log_likelihood = images @ logits.T - F.softplus(logits).sum(-1)  # (N, K)
        encoder_logits = self.encode(images).log_softmax(-1)  # (N, L, C)
        log_q = encoder_logits.flatten(-2) @ codes.flatten(-2).T  # (N, K): Σ_l log q(z_l | x), one-hot z
        reconstruction = -(log_q.exp() * log_likelihood).sum(-1)
        kl = self.kl(encoder_logits)
        if self.prior_logits is None:
            log_marginal = torch.logsumexp(log_likelihood, -1) - self.variables * math.log(self.classes)
        else:
            log_marginal = torch.logsumexp(log_likelihood + self.code_log_prior(codes), -1)
        return {"reconstruction": reconstruction, "kl": kl, "elbo": reconstruction + kl, "nll": -log_marginal}

    def sampled_terms(self, images: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Per image, from ``eval_samples`` draws z ~ q: estimated E_q[−log p(x|z)], exact KL, IWAE bound."""
        encoder_logits = self.encode(images).log_softmax(-1)
        uniform = torch.rand(
            (self.eval_samples, *encoder_logits.shape), generator=generator, device=generator.device
        )
        index = (encoder_logits - torch.log(-torch.log(uniform.clamp_min(1e-20)))).argmax(-1)
        z = torch.zeros_like(uniform).scatter(-1, index.unsqueeze(-1), 1.0)  # (K, N, L, C)
        log_likelihood = -self.objective(images)(z)  # (K, N)
        log_q = (z * encoder_logits).sum((-1, -2))
        log_weights = log_likelihood + self.code_log_prior(z) - log_q
        bound = torch.logsumexp(log_weights, 0) - math.log(self.eval_samples)
        reconstruction = -log_likelihood.mean(0)
        kl = self.kl(encoder_logits)
        return {"reconstruction": reconstruction, "kl": kl, "elbo": reconstruction + kl, "nll": -bound}

    def measure(self, images: Tensor) -> dict[str, float]:
        generator = torch.Generator(device=images.device).manual_seed(EVAL_SEED)
        parts: list[dict[str, Tensor]] = []
        for chunk in images.split(CHUNK):
            parts.append(
                self.enumerated_terms(chunk) if self.enumerable else self.sampled_terms(chunk, generator)
            )
        return {key: float(torch.cat([part[key] for part in parts]).mean()) for key in parts[0]}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        test = self.measure(self.test_images)
        validation = self.measure(self.validation_images)
        train = self.measure(self.fixed_train_images[:TRAIN_EVAL_POINTS])
        return {
            "objective": test["elbo"],
            "validation_objective": validation["elbo"],
            "test_reconstruction": test["reconstruction"],
            "test_kl": test["kl"],
            "test_nll" if self.enumerable else "test_nll_iwae": test["nll"],
            "train_negative_elbo": train["elbo"],
        }


def hidden_widths(value: Any) -> bool:
    """An integer >= 1, or a sequence (a list; Hydra's ListConfig) of them."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value >= 1
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(isinstance(width, int) and not isinstance(width, bool) and width >= 1 for width in value)
    )


HIDDEN = Rule(
    "an integer >= 1 or a list of them (one width per hidden layer; [] for one linear map each way)",
    hidden_widths,
)


def kl_to_uniform(logits: Tensor) -> Tensor:
    """KL(Cat(softmax(logits)) ‖ uniform) summed over the variables: Σ q log q + L log C; shape (B,)."""
    log_q = logits.log_softmax(-1)
    return (log_q.exp() * log_q).sum((-1, -2)) + logits.shape[-2] * math.log(logits.shape[-1])
