"""The task protocol: what the runner and the probes need from a task, and nothing more.

A task is an ``nn.Module`` holding every trainable parameter. Its objective has the form
L(θ) = E_{z~p_θ(z)}[f(z)] + (deterministic terms), split so that an estimator sees only the stochastic part:

- ``distribution(batch)`` returns the distribution parameters (logits tensor for ``categorical``,
  ``estimators.Gaussian`` for ``gaussian``) as a function of the probed parameters;
- ``objective(batch)`` returns f, mapping samples ``(S, *B, *event)`` to values ``(S, *B[:k])``;
- ``deterministic(params, batch)`` returns the extra scalar terms whose gradient needs no estimator (the
  analytic KL of a VAE); zero by default;
- ``loss(estimator, samples, batch)`` puts them together: the scalar whose ``backward`` is one training
  gradient estimate. Its value is the training loss.

For measurement: ``probed_parameters()`` are the parameters whose gradient estimates the probe studies (by
default those of the distribution), ``reference_gradient(batch)`` the true gradient of ``loss`` with respect
to them (or ``None``), ``reference`` says where it comes from (``analytic``, ``exact``, ``monte_carlo`` or
``none``), and ``evaluate()`` returns the task's metrics, among them ``objective``, the headline number
(``final_loss``).

Class attributes: ``latent`` is one of ``estimators.base.LATENT_KINDS`` (what ``distribution`` returns, and so
which estimators fit; a Bernoulli is ``categorical`` with two classes) and ``reference`` one of
``REFERENCE_KINDS``. Optional hooks, all with defaults below: ``train_batch``, ``probe_batch``,
``probe_batches``, ``after_step``. Required: ``distribution`` and ``objective`` (or ``loss``),
``probed_parameters``, ``evaluate``, and ``reference_gradient`` where ``reference`` is ``analytic`` or
``exact``.

A Monte-Carlo reference (``reference = "monte_carlo"``) needs nothing more from the task: the probe takes
the mean of ``reference_draws`` (N) independent draws of an unbiased estimator of the task's own loss on the
probe batch (``bench.run.probe.reference``). A task whose outcomes can be enumerated while their number is
small takes a setting ``reference`` from its config and resolves it with ``choose_reference``: ``auto`` (exact
while the outcomes are at most a limit, else ``monte_carlo``), ``exact``, ``monte_carlo`` (forced, e.g. to
validate the Monte-Carlo reference against the exact one on a small task) or ``none``.

A task of your own, outside this package, runs with ``task=custom task.factory=MODULE:FUNCTION``
(``bench.tasks.custom``, README "Bring your own task"), checked first by ``bench.tasks.custom.check_task``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from bench.tasks.checks import refuse
from estimators.base import Estimator

REFERENCE_KINDS = ("analytic", "exact", "monte_carlo", "none")
"""Where a task's reference gradient comes from (``bench.formats.contract.REFERENCE_KINDS``)."""
REFERENCE_SETTINGS = ("auto", "exact", "monte_carlo", "none")
"""The values of an enumerable task's ``reference`` setting (``choose_reference``)."""
DEFAULT_REFERENCE_DRAWS = 256


def choose_reference(setting: str, outcomes: int, limit: int) -> str:
    """The reference kind of a task with ``outcomes`` joint outcomes per data point for ``task.reference``.

    ``auto``: ``exact`` (enumeration) while ``outcomes`` ≤ ``limit``, else ``monte_carlo``. ``exact`` above
    the limit is refused; ``monte_carlo`` and ``none`` are taken as they are.
    """
    if setting not in REFERENCE_SETTINGS:
        refuse(
            "reference",
            setting,
            "one of auto (exact enumeration while the outcomes are few enough, else monte_carlo), exact, "
            "monte_carlo or none",
        )
    if setting == "auto":
        return "exact" if outcomes <= limit else "monte_carlo"
    if setting == "exact" and outcomes > limit:
        refuse(
            "reference",
            setting,
            f"auto or monte_carlo here: the exact reference enumerates at most {limit} outcomes per data "
            f"point, and this task has {outcomes}",
        )
    return setting


class Task(nn.Module):
    latent: ClassVar[str] = ""
    reference: ClassVar[str] = "none"
    # N, the draws of an unbiased estimator whose mean is the reference where ``reference`` is monte_carlo.
    reference_draws: int = DEFAULT_REFERENCE_DRAWS
    # The best objective any parameters can reach, where it is known (analytic for toy and gaussian): the
    # report's default time-to-target is a stated fraction of the way from the initial objective to it.
    best_known_objective: float | None = None
    # True where ``objective`` is a multi-sample objective (``estimators.base.ImportanceWeighted``: a VAE with
    # objective=iwae); only then can an estimator with ``multi_sample`` (VIMCO) train it.
    multi_sample: bool = False

    def distribution(self, batch: Any) -> Any:
        raise NotImplementedError

    def objective(self, batch: Any) -> Callable[[Tensor], Tensor]:
        raise NotImplementedError

    def deterministic(self, params: Any, batch: Any) -> Tensor:
        return torch.zeros(())

    def loss(self, estimator: Estimator, samples: int, batch: Any = None) -> Tensor:
        params = self.distribution(batch)
        surrogate = estimator(params, self.objective(batch), samples)
        return surrogate.mean() + self.deterministic(params, batch)

    def train_batch(self, step: int, generator: torch.Generator | None = None) -> Any:
        """The data for one training step (``None`` for tasks without data).

        ``generator`` is the run's data generator, seeded with the run's seed: draw the data order from it
        (not from torch's global generator, which the estimators' sampling consumes), so that runs of one
        seed train on the same data whatever the estimator. A task written with ``train_batch(self, step)``
        keeps working; it is then called without the generator.
        """
        return None

    def probe_batch(self) -> Any:
        """The fixed data batch used by every probe of a run (``None`` for tasks without data)."""
        return None

    def probe_batches(self, draws: int) -> list[Any] | None:
        """One data batch per probe draw, or ``None`` (the default): every draw uses ``probe_batch()``.

        A task without a reference gradient (a VQ-VAE) returns fresh batches here, so that the probe's
        ``grad_variance`` measures the spread of the estimate across data batches, not only sampling noise.
        """
        return None

    def after_step(self, step: int, batch: Any) -> dict[str, float]:
        """Called after every optimizer step; metrics it returns are recorded every ``log_every`` steps."""
        return {}

    def probed_parameters(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def reference_gradient(self, batch: Any) -> list[Tensor] | None:
        return None

    def distribution_reference_gradient(self, params: Any, batch: Any) -> list[Tensor] | None:
        """The true gradient of the loss with respect to the tensors of ``params`` that require a gradient
        (the distribution's parameters at ``batch``, detached from the encoder), or None if unknown.

        Used by probes with ``probe.wrt=distribution``. By default it enumerates every outcome with the
        exact estimator when the task's reference is ``exact`` and its latent is categorical.
        """
        if self.reference != "exact" or self.latent != "categorical":
            return None
        from estimators.exact import Exact

        tensors = [leaf for leaf in tree_leaves(params) if isinstance(leaf, Tensor) and leaf.requires_grad]
        with torch.enable_grad():
            loss = Exact()(params, self.objective(batch), 1).mean() + self.deterministic(params, batch)
            return list(torch.autograd.grad(loss, tensors, allow_unused=True, materialize_grads=True))

    def evaluate(self) -> dict[str, float]:
        raise NotImplementedError
