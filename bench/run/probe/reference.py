"""References a probe can measure against when the task cannot enumerate, and a check that needs none.

**Monte-Carlo reference** (``reference: monte_carlo``, ``docs/design.md``, "Metrics"). The reference
gradient is r̄ = 1/N Σ_n r̂_n, the mean of N = ``reference_draws`` independent draws of an unbiased estimator
of the task's loss on the probe batch, with respect to the probe's own targets (``probe.wrt``), drawn through
the same path as the probe's draws (``bench.run.probe.draws``; vectorized in chunks where the task and the
estimator allow it) from a random stream of its own: torch's generator seeded with the probe's seed +
``SEED_OFFSET``, forked, so that neither the probe's draws nor training see it. Its variance
V̂_R = 1/(N−1) Σ‖r̂_n − r̄‖² enters every statistic that compares with it
(``bench.run.probe.statistics.gradient_statistics(..., reference_draws=...)``).

The estimator is the one with less variance per evaluation of f, measured on ``PILOT_DRAWS`` draws of each
candidate (discarded afterwards, so that the choice does not select the reference's own draws):

- local expectation gradients (``estimators.LocalExpectation``, Titsias & Lázaro-Gredilla 2015) with S = 1,
  1 + L·(C − 1) evaluations of f per draw (categorical latents);
- RLOO (``estimators.ScoreFunction(baseline="loo")``, Kool et al. 2019) with as many samples as that, at
  equal cost; ``GAUSSIAN_SAMPLES`` samples for Gaussian latents, and for a task that overrides ``loss()``
  (no separate f whose evaluations could be counted), where it is the only candidate.

The cost is counted in evaluations of f (``f_evals``), not in wall time, so that the choice, and with it
the reference, is the same on every machine.

**Unbiasedness check** (``unbiasedness_check``; ``python -m bench.check unbiasedness``). For a task with a
stochastic objective and no reference at all (in the spirit of the bias check of Dong, Mnih & Tucker 2020,
"DisARM"): n independent pairs (ĝ_i, r̂_i) of the estimator and of a second, unbiased estimator (the one the
Monte-Carlo reference would choose) at the same parameters and data; their differences d_i = ĝ_i − r̂_i have
mean b, the estimator's bias. Along the running n it reports ‖d̄‖, the noise floor √(V̂_d/n), the squared bias
‖d̄‖² − V̂_d/n, the p-value of the probes' test of zero bias (``bench.run.probe.statistics.bias_test``) and its
z-score z = Φ⁻¹(1 − p): about N(0, 1) for an unbiased estimator, growing like √n·‖b‖ for a biased one.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from scipy import special
from torch import Tensor
from torch.utils._pytree import tree_leaves

from bench.formats.errors import ConfigError
from bench.run.probe.draws import Targets, draw_gradients, draw_gradients_vectorized, probe_targets
from bench.run.probe.statistics import bias_test, draw_moments, draw_variance
from bench.run.probe.vectorize import report_fallback, vectorization_blocker
from bench.tasks.base import Task
from estimators.base import Estimator
from estimators.leg import LocalExpectation
from estimators.score_function import ScoreFunction

SEED_OFFSET = 0x5EED_F0_2E7E  # the reference's stream: the probe's seed + this
PILOT_DRAWS = 16  # draws of each candidate that decide which estimator gives the reference
GAUSSIAN_SAMPLES = 64  # RLOO's samples per draw where it is the only candidate
VMAP_ELEMENTS = 2**19  # elements of f's input per vmap chunk: small chunks stay in cache
CALL_ELEMENTS = 2**24  # elements of the (draws, P) gradients per vectorized call: bounds memory


@dataclass
class Candidate:
    """An unbiased estimator that can give a Monte-Carlo reference: its name, S and cost per draw."""

    name: str
    estimator: Estimator
    samples: int
    f_evals: int | None  # evaluations of f per draw, for one data point; None where f is not separate


@dataclass
class MonteCarloReference:
    """N draws of the chosen estimator (rows of ``draws``), their variance V̂_R, and what they cost."""

    draws: Tensor
    estimator: str
    samples: int
    variance: float
    time_ms: float
    pilot_variances: dict[str, float]

    def fields(self) -> dict[str, Any]:
        """The summary fields of a Monte-Carlo reference (``bench.formats.contract.REFERENCE_FIELDS``)."""
        return {
            "reference_estimator": self.estimator,
            "reference_samples": self.samples,
            "reference_draws": int(self.draws.shape[0]),
            "reference_variance": self.variance,
            "reference_time_ms": self.time_ms,
        }


def candidates(task: Task, batch: Any, targets: Targets) -> list[Candidate]:
    """The unbiased estimators that fit the task's latent kind, at equal cost in evaluations of f."""
    split = type(task).loss is Task.loss  # else there is no separate f to count evaluations of
    if task.latent == "categorical":
        leg = LocalExpectation()
        evaluations = None
        if split:
            with torch.no_grad():
                params = targets.distribution(batch)
            evaluations = leg.f_evaluations(params, task.objective(batch), 1)
        samples = max(2, evaluations or GAUSSIAN_SAMPLES)
        return [
            Candidate("leg", leg, 1, evaluations),
            Candidate("rloo", ScoreFunction(baseline="loo"), samples, samples),
        ]
    if task.latent == "gaussian":
        return [Candidate("rloo", ScoreFunction(baseline="loo"), GAUSSIAN_SAMPLES, GAUSSIAN_SAMPLES)]
    raise ConfigError(
        f"a Monte-Carlo reference needs an unbiased estimator for the task's latent variables, and there is "
        f"none for {task.latent!r} latents here (local expectation gradients and RLOO are for categorical, "
        f"RLOO also for gaussian); set the task's reference to none."
    )


def chunk_sizes(task: Task, batch: Any, targets: Targets, candidate: Candidate) -> tuple[int, int]:
    """(draws per vectorized call, draws per vmap chunk): bounded memory, and chunks that stay in cache."""
    parameters = sum(tensor.numel() for tensor in targets.tensors)
    per_call = max(1, CALL_ELEMENTS // max(parameters, 1))
    if type(task).loss is not Task.loss:
        return per_call, 1
    with torch.no_grad():
        params = targets.distribution(batch)
    size = sum(leaf.numel() for leaf in tree_leaves(params) if isinstance(leaf, Tensor))
    evaluations = candidate.f_evals or candidate.samples
    return per_call, max(1, VMAP_ELEMENTS // max(1, evaluations * size))


def draw(
    task: Task,
    candidate: Candidate,
    batch: Any,
    count: int,
    targets: Targets,
    vectorize: bool = True,
) -> Tensor:
    """``count`` gradient draws of ``candidate`` (shape (count, P)): the probe's vectorized path in chunks
    where the task and the estimator allow it (``bench.run.probe.vectorization_blocker``), else its loop."""

    if vectorize and vectorization_blocker(task, candidate.estimator) is None:
        per_call, per_chunk = chunk_sizes(task, batch, targets, candidate)
        try:
            parts = []
            for start in range(0, count, per_call):
                size = min(per_call, count - start)
                parts.append(
                    draw_gradients_vectorized(
                        task,
                        candidate.estimator,
                        candidate.samples,
                        batch,
                        size,
                        chunk_size=min(per_chunk, size),
                        targets=targets,
                    )
                )
            return torch.cat(parts)
        except (RuntimeError, NotImplementedError) as error:  # an operation torch.func cannot batch
            reason = f"the vectorized draw failed with {type(error).__name__}: {str(error).splitlines()[0]}"
            report_fallback(task, candidate.estimator, reason, logging.WARNING)
    return draw_gradients(task, candidate.estimator, candidate.samples, batch, count, None, targets)


def choose(
    task: Task, batch: Any, targets: Targets, vectorize: bool = True, pilot_draws: int = PILOT_DRAWS
) -> tuple[Candidate, dict[str, float]]:
    """The candidate with the least variance × evaluations of f per draw, from ``pilot_draws`` draws each."""
    found = candidates(task, batch, targets)
    if len(found) == 1 or any(candidate.f_evals is None for candidate in found):
        return found[-1], {}
    variances = {
        candidate.name: draw_variance(draw(task, candidate, batch, pilot_draws, targets, vectorize))
        for candidate in found
    }
    best = min(found, key=lambda candidate: variances[candidate.name] * candidate.f_evals)
    return best, variances


def cuda_devices(targets: Targets) -> list[int]:
    """The CUDA devices the targets live on, whose generators the reference's stream forks too."""
    return sorted({tensor.device.index or 0 for tensor in targets.tensors if tensor.device.type == "cuda"})


def monte_carlo_reference(
    task: Task,
    batch: Any,
    targets: Targets,
    draws: int,
    seed: int | None = None,
    vectorize: bool = True,
    pilot_draws: int = PILOT_DRAWS,
) -> MonteCarloReference:
    """N = ``draws`` independent draws of the unbiased estimator with the least variance per evaluation of f.

    ``seed``: the reference's stream (default: torch's initial seed, i.e. the probe's seed, +
    ``SEED_OFFSET``); the caller's random stream is left untouched. ``vectorize``: through the probe's
    vectorized path where the task and the estimator allow it.
    """
    if draws < 2:
        raise ConfigError(f"a Monte-Carlo reference needs at least 2 draws (for its variance), got {draws}.")
    seed = torch.initial_seed() + SEED_OFFSET if seed is None else seed
    started = time.perf_counter()
    with torch.random.fork_rng(devices=cuda_devices(targets)):
        torch.manual_seed(seed % 2**63)
        chosen, pilot = choose(task, batch, targets, vectorize, pilot_draws)
        reference_draws = draw(task, chosen, batch, draws, targets, vectorize)
    return MonteCarloReference(
        draws=reference_draws,
        estimator=chosen.name,
        samples=chosen.samples,
        variance=draw_variance(reference_draws),
        time_ms=1000 * (time.perf_counter() - started),
        pilot_variances=pilot,
    )


# --- the unbiasedness check without a reference -------------------------------------------------------------


@dataclass
class CheckPoint:
    """The running comparison after ``pairs`` pairs (``unbiasedness_check``)."""

    pairs: int
    difference: float  # ‖d̄‖
    noise: float  # √(V̂_d/n)
    bias_sq: float  # ‖d̄‖² − V̂_d/n, unbiased for ‖b‖²
    p_value: float  # the test of zero bias
    z: float  # Φ⁻¹(1 − p)


@dataclass
class UnbiasednessCheck:
    """What ``unbiasedness_check`` compared against (the second estimator and its S), and its checkpoints."""

    against: str
    against_samples: int
    points: list[CheckPoint]


def difference_statistics(differences: Tensor) -> CheckPoint:
    """‖d̄‖, √(V̂_d/n), ‖d̄‖² − V̂_d/n and the test of E d = 0 for the rows of ``differences`` (n, P).

    The test is the probes' (``bench.run.probe.statistics.bias_test``, an exact reference of zero): T′ against
    F(ν, ν₂); z = Φ⁻¹(1 − p), from log p so that it keeps growing where p underflows, and from Paulson's
    (1942) normal approximation of F beyond that.
    """
    pairs, dimension = differences.shape
    moments = draw_moments(differences)
    error_norm_sq = float(moments.mean @ moments.mean)
    noise = moments.variance / pairs
    point = CheckPoint(pairs, math.sqrt(error_norm_sq), math.sqrt(noise), error_norm_sq - noise, math.nan, 0)
    test = bias_test(moments, torch.zeros(dimension, dtype=torch.float64))
    if test is None:
        point.z = math.nan
        return point
    ratio, dof, dof_denominator, log_p = test.statistic, test.dof, test.dof_denominator, test.log_p
    point.p_value = test.p_value
    if math.isfinite(log_p):
        point.z = float(-special.ndtri_exp(log_p))
    else:  # Paulson: ((1 − 2/(9ν₂)) F^⅓ − (1 − 2/(9ν))) / √(2/(9ν) + 2/(9ν₂) F^⅔) is about N(0, 1)
        cube_root = ratio ** (1 / 3)
        numerator = (1 - 2 / (9 * dof_denominator)) * cube_root - (1 - 2 / (9 * dof))
        point.z = numerator / math.sqrt(2 / (9 * dof) + 2 / (9 * dof_denominator) * cube_root**2)
    return point


def unbiasedness_check(
    task: Task,
    estimator: Estimator,
    samples: int,
    pairs: int = 2000,
    checkpoints: int = 10,
    against: Estimator | None = None,
    against_samples: int | None = None,
    wrt: str = "parameters",
    vectorize: bool = True,
    batch: Any = None,
) -> UnbiasednessCheck:
    """The running difference of ``estimator`` against a second, unbiased estimator, and its z-score.

    ``pairs`` independent pairs of gradient draws on ``batch`` (default: the task's probe batch) with respect
    to ``wrt`` (``probe.wrt``), one of ``estimator`` with ``samples`` samples and one of ``against`` with
    ``against_samples`` (default: the estimator a Monte-Carlo reference would choose, ``choose``); the
    statistics of their differences (``difference_statistics``) after each of ``checkpoints`` equal blocks.
    An unbiased estimator's z stays within a few units of 0 (|z| > 4 has probability 6·10⁻⁵ at each
    checkpoint); a biased one's grows like √n.
    """
    if pairs < 2 * checkpoints or checkpoints < 1:
        raise ConfigError(f"the check needs pairs >= 2·checkpoints >= 2, got {pairs} and {checkpoints}.")
    batch = task.probe_batch() if batch is None else batch
    targets = probe_targets(task, batch, wrt)
    if against is None:
        reference, _ = choose(task, batch, targets, vectorize)
    else:
        reference = Candidate(type(against).__name__, against, against_samples or samples, None)
        reference.estimator.eval()
    probed = Candidate(type(estimator).__name__, estimator, samples, None)
    differences = []
    found = []
    done = 0
    for block in range(checkpoints):
        size = (pairs * (block + 1)) // checkpoints - done
        gradients = draw(task, probed, batch, size, targets, vectorize)
        differences.append(gradients - draw(task, reference, batch, size, targets, vectorize))
        done += size
        found.append(difference_statistics(torch.cat(differences)))
    return UnbiasednessCheck(reference.name, reference.samples, found)
