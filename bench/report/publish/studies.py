"""The studies of the results page (``docs/results/``), one row each: what runs, with which overrides, and
which figures the page shows. Adding a study to the page is one ``PageStudy(...)`` line in ``STUDIES``.

Each study's runs go to ``ROOT/publish/<name>/`` (``hydra.sweep.dir``), so re-running ``python -m
bench.campaigns.publish`` resumes every sweep (finished runs are skipped). The default sizes (seeds, steps)
keep the whole page near ``DEFAULT_BUDGET``; ``python -m bench.publish --set NAME:KEY=VALUE`` changes one
study's override (e.g. ``--set vq_estimators:seed=0,1,2,3,4 --set vq_estimators:steps=1500``) to scale it up
on a GPU or a cluster, into another ``--results`` folder.

A study tuned by ``python -m bench.tune`` (each optimizer's grid, then the chosen settings with fresh seeds)
is one line too; the page reports its stage-2 runs::

    PageStudy("optimizers_toy_tuned", "Tuned optimizers on the toy task",
              ("+experiment=optimizers_toy_tuned",),
              "Adam, Lookahead and SGD, each tuned by the same protocol.", ("objective",),
              "bench.tune", "final"),
"""

from __future__ import annotations

from dataclasses import dataclass, replace

DEFAULT_BUDGET = "about 30–40 minutes of compute on 2 CPU cores (two runs at a time, one thread each)"

FIGURES = {
    "objective": "the objective over training steps",
    "validation_objective": "the validation objective over training steps",
    "bias_variance": "squared bias against variance at the probe point",
    "variance": "the gradient variance per configuration at the probe point",
    "study": "the same-point gradient study's figures",
    "tuned": "a tuned study's choices, learning-rate sensitivity, final table and held-out check",
    "recommendation": "python -m bench.recommend's answer, its evidence and caveats (recommendation.md)",
    "committed": "a script's committed table.md and figure in the study's folder (no runs of its own)",
}
"""Figure kinds a study can show; besides these, ``section:<name>`` shows a task's declared section
(``task.report``) with its table and figure, ``table:<name>`` its table alone."""


@dataclass(frozen=True)
class PageStudy:
    """One study of the results page.

    ``overrides``: the study's ``python -m bench -m`` (or ``python -m bench.tune``) arguments, swept keys
    as ``key=a,b,c``; ``about``: a paragraph saying what is compared; ``figures``: what the page shows
    (keys of ``FIGURES``, ``section:<name>`` or ``table:<name>``); ``command``: ``bench`` (a Hydra
    multirun), ``bench.tune`` (the two-stage tuning protocol), ``bench.recommend`` (a recommendation: the
    page shows its ``recommendation.md``) or a script (``scripts/<name>.py``, run by hand: the page shows
    the ``table.md`` and figure it wrote into the study's folder); ``runs``: the subfolder of the study's
    folder whose runs the page reports (``final`` for a tuned study: its stage-2 runs; ``stage2`` for a
    recommendation).
    """

    name: str
    title: str
    overrides: tuple[str, ...]
    about: str
    figures: tuple[str, ...] = ("objective",)
    command: str = "bench"
    runs: str = ""

    def with_override(self, item: str) -> PageStudy:
        """This study with ``KEY=VALUE`` replacing its override of KEY (or added)."""
        key = item.partition("=")[0]
        kept = tuple(existing for existing in self.overrides if existing.partition("=")[0] != key)
        return replace(self, overrides=(*kept, item))


SEEDS5 = "seed=0,1,2,3,4"

STUDIES: tuple[PageStudy, ...] = (
    PageStudy(
        "toy_estimators",
        "Estimators on the toy task",
        (
            "task=toy",
            "samples=2",
            "estimator=score_function,rloo,disarm,st,gumbel,gumbel_st,reinmax,exact",
            SEEDS5,
        ),
        "One Bernoulli variable, f(b) = (b − 0.45)², the analytic gradient as reference; every estimator at "
        "S = 2 samples, Adam, 500 steps.",
        ("bias_variance", "objective"),
    ),
    PageStudy(
        "toy_gradient_study",
        "Same-point gradient study on the toy task",
        ("+experiment=toy_gradient_study",),
        "Every sampling estimator probed at the checkpoints of a trajectory trained by exact enumeration, "
        "with common random numbers; each seed starts from its own initial logits (p(b = 1) from 0.20 to "
        "0.43, around 0.3), so that the seeds are five trajectories.",
        ("study",),
    ),
    PageStudy(
        "gaussian_estimators",
        "Estimators on the Gaussian task",
        ("task=gaussian", "samples=2", "estimator=reparam,score_function,rloo,measure_valued", SEEDS5),
        "z ~ N(μ, σ²), f(z) = (z − 1)², the analytic gradient as reference; every estimator at S = 2 "
        "samples, Adam, 500 steps.",
        ("bias_variance", "objective"),
    ),
    PageStudy(
        "vae_estimators",
        "Estimators on the categorical VAE (own trajectories)",
        ("+experiment=vae_estimators", "steps=500", "probe.every=500"),
        "The digits VAE with 4 categorical latents of 8 classes (4096 codes: the exact gradient is the "
        "reference); each estimator trains its own model at S = 2, so its gradient statistics at the end are "
        "at its own parameters; the table's gradient columns are at step 0, where every estimator of a seed "
        "has the same parameters.",
        ("bias_variance", "table:elbo"),
    ),
    PageStudy(
        "vae_gradient_study",
        "Same-point gradient study on the categorical VAE",
        ("+experiment=vae_gradient_study", "steps=300", "study.steps=[0,10,30,100,300]"),
        "Every sampling estimator probed at the checkpoints of a trajectory trained by exact enumeration, "
        "with common random numbers: gradient quality at the same parameters (300 of the experiment's 1000 "
        "steps).",
        ("study",),
    ),
    PageStudy(
        "vae_recommendation",
        "Which estimator for the categorical VAE? (python -m bench.recommend)",
        ("task=vae",),
        "The answer of `python -m bench.recommend task=vae` at its default budget (10 minutes on 2 cores): "
        "every estimator that fits the 4×8 VAE at equal cost in evaluations of f, each at its own best "
        "learning rate of a small grid, the leaders rerun on fresh seeds and compared paired over seeds, "
        "with the same-point evidence along the leader's trajectory and the caveats.",
        ("recommendation",),
        "bench.recommend",
        "stage2",
    ),
    PageStudy(
        "predictive_validity",
        "Which same-point gradient statistic predicts training?",
        (),
        "The Spearman rank correlation, per seed, between each estimator's final objective at equal cost "
        "(each at its own best learning rate) and a gradient statistic measured at the same parameters (a "
        "same-point study along a trajectory of that seed, averaged over 4 checkpoints), on three tasks; "
        "mean over 5 seeds with a 95% t-interval. Training averages variance away over steps but not bias: "
        "the horizon MSE ‖b‖² + V/H (Adam averages over about H = 1/(1 − β₁) = 10 steps) weighs them as "
        "training does. The recommendation's evidence and the reports' same-point rankings use the best "
        "predictor.",
        ("committed",),
        "scripts/predictive_validity.py",
    ),
    PageStudy(
        "bias_calibration",
        "Is the test of zero bias calibrated?",
        (),
        "How often the probe's test of zero bias (`grad_bias_p`) rejects for unbiased estimators (its size, "
        "which should be α) and for a planted bias (its power): 1000 independent probes per case, M = 256 "
        "draws each, at fixed parameters where the bias is known, with Clopper–Pearson 95% intervals. The "
        "verdicts of every table on this page rest on it; what the test assumes, and where it is still "
        'approximate: [design notes](../design.md#metrics), "The test of zero bias".',
        ("committed",),
        "scripts/bias_calibration.py",
    ),
    PageStudy(
        "vq_estimators",
        "Vector-quantization estimators on the VQ-VAE",
        ("+experiment=vq_estimators", "steps=1000", "probe.every=100", "seed=0,1,2"),
        "Straight-through, the rotation trick and stochastic VQ (through straight-through Gumbel-Softmax), "
        "the codebook trained by its loss, by EMA, as SimVQ's frozen codebook times a learned linear map "
        "(codebook_update=linear; SimVQ is its vq_st row) or replaced by FSQ's fixed grid (fsq; FSQ is its "
        "vq_st row); codebook perplexity and quantization error for each; there is no reference gradient.",
        ("section:codebook",),
    ),
    PageStudy(
        "categorical_vae_estimators",
        "MNIST-size categorical VAE on the digits28 stand-in (reduced)",
        (
            "+experiment=categorical_vae_estimators",
            "task=categorical_vae_20x10",
            "estimator=gumbel,st,reinmax",
            "steps=500",
            "probe.every=250",
            "probe.draws=64",
            "seed=0,1,2",
        ),
        "Jang et al.'s 20 × 10 categorical VAE (784-512-256 MLPs) on the offline 28 × 28 stand-in (not "
        "MNIST), one sample per image, Adam at 1e-3; 500 of the protocol's 100,000 steps, so this shows the "
        "start of training only.",
        ("variance",),
    ),
    *(
        PageStudy(
            f"optimizers_{problem}_today",
            f"Today's optimizers, tuned, on {title}",
            (f"+experiment=optimizers_{problem}_today",),
            f"Adam (the baseline), AlgoPerf's NAdamW (warmup and cosine decay), Schedule-Free AdamW, SOAP, "
            f"Muon, block Shampoo and Lookahead(Adam){extra} on {what}, each tuned by the same two-stage "
            "protocol (`python -m bench.tune`): stage 1 a four-point learning-rate grid with one seed, "
            "scored on the validation objective; stage 2 the chosen rate with 5 fresh seeds, reported on the "
            f"test objective; then the same seeds on a held-out variant ({heldout}). Reduced for 2 CPU "
            f"cores: {steps} training steps per run (the experiment's header gives the budget).",
            ("tuned",),
            "bench.tune",
        )
        for problem, title, what, heldout, steps, extra in (
            (
                "embedding",
                "the embedding table",
                "a 30,000 × 32 embedding table (Zipf 1.1 token frequencies); lazy Adam answers the lazy "
                "Adam question here: its column against Adam's in the final table",
                "token frequencies Zipf 1.3",
                200,
                " and lazy Adam",
            ),
            (
                "vae",
                "the 4 × 8 categorical VAE",
                "the digits VAE with 4 categorical latents of 8 classes, straight-through Gumbel-Softmax",
                "dynamic binarization: another draw of the data",
                300,
                "",
            ),
            (
                "vqvae",
                "the VQ-VAE",
                "the digits VQ-VAE (4 latent vectors, 64 codes, straight-through)",
                "16 codes instead of 64",
                300,
                "",
            ),
            (
                "bernoulli_vae",
                "the Bernoulli VAE",
                "the digits VAE with 12 Bernoulli latents, straight-through Gumbel-Softmax",
                "24 latent bits instead of 12",
                300,
                "",
            ),
        )
    ),
    PageStudy(
        "optimizers_embedding_tuned",
        "When does lazy Adam beat Adam? (tuned)",
        ("+experiment=optimizers_embedding_tuned", "tuning.seeds=[0]"),
        "Adam, lazy Adam, torch's SparseAdam and AdamW on the embedding task as the fraction of rows touched "
        "per step (vocabulary 1,000 or 30,000 rows) and the skew of token frequencies (Zipf 0.8 or 1.3) "
        "vary, each optimizer tuned separately in each of the 4 conditions (five learning rates, one seed; "
        "reduced from the experiment's two), 300 steps; held out: another generated data set "
        "(`task.data_seed=1`). The lazy Adam answer is the `lazy_adam − adam` column of the final table.",
        ("tuned",),
        "bench.tune",
    ),
    PageStudy(
        "optimizers_vae_tuned",
        "Estimator × optimizer on the 3 × 8 VAE (tuned)",
        ("+experiment=optimizers_vae_tuned", "tuning.seeds=[0]", "steps=300"),
        "Adam, Lookahead(Adam) and SGD with momentum, each tuned separately for each estimator (score "
        "function without a baseline, RLOO, straight-through Gumbel-Softmax, ReinMax; S = 2) on the digits "
        "VAE with 3 latents of 8 classes (reduced: one stage-1 seed of the experiment's two, 300 of its 600 "
        "steps); "
        "held out: 4 latents instead of 3. The final table is the estimator × optimizer table: does "
        "Lookahead help more with high-variance estimators?",
        ("tuned",),
        "bench.tune",
    ),
)


def by_name(studies: tuple[PageStudy, ...] = STUDIES) -> dict[str, PageStudy]:
    return {study.name: study for study in studies}
