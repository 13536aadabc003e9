"""Two measurements quoted in the estimators' docstrings, reproducible: ``python scripts/estimator_truths.py``
(about 15 minutes on one core; ``--quick`` for a tenth of the draws).

- RELAX (``estimators/relax.py``): the variance objective ‖ĝ‖² differentiated in log λ by autograd, through
  the control network's ReLU steps, against central finite differences of its mean on common random numbers;
  on the toy (one Bernoulli, t = 0.45) at p = 0.3, the network-only RELAX at λ = 0.4 with its output
  switched on, float64.
- Gumbel-Rao (``estimators/gumbel_rao.py``): the conditional noise detached (the reference implementation,
  this package) against differentiated through (the paper's wording), on the 4 × 8 VAE at initialization (8
  probe images, R = 10, τ = 1): the two means and variances of the estimate with respect to the encoder's
  logits.
"""

from __future__ import annotations

import math
import sys

import torch

from bench.tasks.toy import Toy
from bench.tasks.vae import VAE
from estimators import RELAX, GumbelRao
from estimators.base import expand_samples, sample_categorical


def relax_lambda(draws: int, step: float = 0.02) -> str:
    task = Toy(dim=1, classes=2).double()
    with torch.no_grad():
        task.logits.zero_()
        task.logits[:, 1] = math.log(0.3 / 0.7)
    f, logits = task.objective(), task.logits.detach()
    estimator = RELAX(relaxed_objective=False, tau=0.4).double()
    with torch.no_grad():
        estimator.network.scale.fill_(1.0)

    def objective(seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # the same draws at every λ: common random numbers
        leaf = logits.clone().requires_grad_(True)
        (estimate,) = torch.autograd.grad(estimator(leaf, f, 1).sum(), leaf, create_graph=True)
        return (estimate**2).sum()

    autograd = torch.tensor(
        [float(torch.autograd.grad(objective(seed), estimator.log_temperature)[0]) for seed in range(draws)]
    )
    values = {}
    for sign in (1, -1):
        with torch.no_grad():
            estimator.log_temperature += sign * step
        values[sign] = torch.tensor([float(objective(seed).detach()) for seed in range(draws)])
        with torch.no_grad():
            estimator.log_temperature -= sign * step
    differences = (values[1] - values[-1]) / (2 * step)
    paired = autograd - differences

    def mean(x: torch.Tensor) -> str:
        return f"{x.mean():.4f} ± {x.std() / math.sqrt(draws):.4f}"

    return (
        f"RELAX, d‖ĝ‖²/d log λ over {draws} draws: autograd {mean(autograd)}, finite differences "
        f"{mean(differences)}, paired difference {mean(paired)}"
    )


class GumbelRaoThroughTheNoise(GumbelRao):
    """Gumbel-Rao with the conditional Gumbels differentiated through (their top-down construction from the
    logits kept in the graph): the paper's wording."""

    def forward(self, logits, f, samples=1, noise=None):
        hard = sample_categorical(logits, samples, noise)
        expanded = expand_samples(logits, samples)
        uniform = torch.rand((self.draws, *hard.shape), dtype=logits.dtype)
        log_exponential = torch.log(-torch.log(uniform.clamp(torch.finfo(logits.dtype).tiny, 1 - 1e-7)))
        top = torch.logsumexp(expanded, -1, keepdim=True) - (hard * log_exponential).sum(-1, keepdim=True)
        others = -torch.logaddexp(-top, log_exponential - expanded)
        soft = (torch.where(hard > 0, top, others) / self.tau).softmax(-1).mean(0)
        return f(hard + soft - soft.detach()).mean(0)


def gumbel_rao_noise(draws: int) -> str:
    torch.manual_seed(0)
    task = VAE(probe_size=8)
    batch = task.probe_batch()
    with torch.no_grad():
        logits = task.distribution(batch)
    f = task.objective(batch)

    def estimates(estimator) -> torch.Tensor:
        torch.manual_seed(1)
        rows = []
        for _ in range(draws):
            leaf = logits.clone().requires_grad_(True)
            estimator(leaf, f, 1).sum().backward()
            rows.append(leaf.grad.reshape(-1))
        return torch.stack(rows).double()

    detached, through = estimates(GumbelRao(draws=10)), estimates(GumbelRaoThroughTheNoise(draws=10))
    shift = detached.mean(0) - through.mean(0)
    chi_square = float((shift**2 / (detached.var(0) / draws + through.var(0) / draws)).sum())
    ratio = float(through.var(0).sum() / detached.var(0).sum())
    moved = float(shift.norm() / detached.mean(0).norm())
    return (
        f"Gumbel-Rao over {draws} draws: the mean moved by {moved:.0%} of its norm (χ² = {chi_square:.0f} on "
        f"{shift.numel()} coordinates), variance through / detached = {ratio:.3g}"
    )


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    torch.set_num_threads(1)
    print(relax_lambda(2000 if quick else 20000))
    print(gumbel_rao_noise(60 if quick else 600))
