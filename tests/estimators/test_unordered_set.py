"""The unordered set estimator (estimators.UnorderedSet): the leave-one-out ratios against the sum over every
order, stochastic beam search against the exact distribution of sets without replacement (χ²), unbiased on
the toy task and on the 4×8 VAE by the calibrated bias test (M = 2048) with a mis-weighted variant rejected
(negative control), exact when the set is the whole domain, its evaluations of f, finite on extreme logits.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch
from scipy import stats

from bench.run.probe import probe
from bench.tasks.toy import Toy
from bench.tasks.vae import VAE
from estimators import UnorderedSet
from estimators import unordered_set as module
from estimators.unordered_set import leave_out_ratios, stochastic_beam_search


def set_probability(p: list[float], chosen: list[int], domain: list[int]) -> float:
    """P^domain(chosen): the chance that |chosen| draws without replacement from ``domain`` (p renormalized
    on it) give the set ``chosen``, in any order; summed over the |chosen|! orders."""
    total = sum(p[j] for j in domain)
    probability = 0.0
    for order in itertools.permutations(chosen):
        term, rest = 1.0, total
        for j in order:
            term, rest = term * p[j] / rest, rest - p[j]
        probability += term
    return probability


def test_the_ratios_match_the_sum_over_orders():
    # Sets of 2–5 of 3–8 outcomes with probabilities from flat to peaked (logit scales 0.1 to 8), never the
    # whole domain; the numerical integration agrees with the k! orders to 1e-7 in log (measured: 1e-9).
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for case in range(40):
        outcomes = int(torch.randint(3, 9, (1,), generator=generator))
        k = int(torch.randint(2, min(outcomes - 1, 5) + 1, (1,), generator=generator))
        logits = [0.1, 1.0, 3.0, 8.0][case % 4] * torch.randn(
            outcomes, generator=generator, dtype=torch.float64
        )
        p = logits.softmax(-1).tolist()
        chosen = torch.randperm(outcomes, generator=generator)[:k].tolist()
        log_r1, log_r2 = leave_out_ratios(torch.tensor([p[j] for j in chosen], dtype=torch.float64).log())
        domain = list(range(outcomes))
        whole = set_probability(p, chosen, domain)
        for i, s in enumerate(chosen):
            without = [j for j in domain if j != s]
            one = set_probability(p, [j for j in chosen if j != s], without)
            worst = max(worst, abs(math.log(one / whole) - float(log_r1[i])))
            assert float(log_r2[i, i]) == 0.0
            for i2, s2 in enumerate(chosen):
                if s2 != s:
                    rest = [j for j in chosen if j not in (s, s2)]
                    two = set_probability(p, rest, [j for j in without if j != s2])
                    worst = max(worst, abs(math.log(two / one) - float(log_r2[i, i2])))
    assert worst < 1e-7, worst


def test_stochastic_beam_search_samples_sets_without_replacement_from_the_joint():
    # Two variables of 3 classes, k = 3 of the 9 joint outcomes: the 84 sets' frequencies in 40000 draws
    # against their exact probabilities (χ² over the sets expected ≥ 5 times); the joint log-probabilities.
    torch.manual_seed(1)
    log_q = (2 * torch.randn(2, 3, dtype=torch.float64)).log_softmax(-1)
    joint = (log_q[0][:, None] + log_q[1][None, :]).exp().reshape(-1).tolist()
    draws = 40000
    codes, log_p = stochastic_beam_search(log_q.expand(draws, 2, 3), 3, torch.rand(3, draws, 2, 3))
    assert torch.equal(log_p, log_q[0][codes[..., 0]] + log_q[1][codes[..., 1]])
    flat = codes[..., 0] * 3 + codes[..., 1]
    assert bool((flat.sort(-1).values.diff(dim=-1) > 0).all())  # distinct outcomes
    counts = Counter(map(tuple, flat.sort(-1).values.tolist()))
    statistic, cells = 0.0, 0
    for chosen in itertools.combinations(range(9), 3):
        expected = draws * set_probability(joint, list(chosen), list(range(9)))
        if expected >= 5:
            statistic += (counts.get(chosen, 0) - expected) ** 2 / expected
            cells += 1
    assert stats.chi2.sf(statistic, cells - 1) > 1e-3, (statistic, cells)


@pytest.mark.parametrize("samples", [2, 3])
def test_unbiased_on_the_toy_task(samples, one_thread):
    torch.manual_seed(2)
    task = Toy(dim=3, p0=0.3)
    assert probe(task, UnorderedSet(), samples, 2048)["grad_bias_p"] > 1e-3


def test_a_wrong_weighting_is_rejected_on_the_toy_task(one_thread, monkeypatch):
    # Negative control: with R = 1 (each outcome weighted by p(s) alone, as if the set were the whole domain)
    # the estimate is biased, and the same test at the same point and M rejects it.
    def unit_ratios(log_p: torch.Tensor, points: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros_like(log_p), torch.zeros(*log_p.shape, log_p.shape[-1], dtype=log_p.dtype)

    monkeypatch.setattr(module, "leave_out_ratios", unit_ratios)
    torch.manual_seed(2)
    assert probe(Toy(dim=3, p0=0.3), UnorderedSet(), 2, 2048)["grad_bias_p"] < 1e-6


def test_unbiased_on_the_vae(one_thread):
    # The 4×8 VAE (8 probe images), S = 2 outcomes of the 4096 joint codes per image, M = 2048 draws of the
    # gradient with respect to the encoder's output logits, against the exact enumeration.
    torch.manual_seed(3)
    task = VAE(probe_size=8)
    torch.manual_seed(4)
    assert probe(task, UnorderedSet(), 2, 2048, wrt="distribution")["grad_bias_p"] > 1e-3


def test_exact_when_the_set_is_the_whole_domain_and_the_evaluations_of_f(one_thread):
    task = Toy(dim=2, p0=0.3)  # 4 joint outcomes: S = 6 takes all of them
    exact = task.reference_gradient()[0]
    for _ in range(3):
        task.logits.grad = None
        UnorderedSet()(task.logits, task.objective(), 6).backward()
        assert torch.allclose(task.logits.grad, exact, rtol=0, atol=1e-6)
    counted = []

    def counting(z: torch.Tensor) -> torch.Tensor:
        counted.append(z.shape[0])
        return task.objective()(z)

    assert UnorderedSet().f_evaluations(task.logits, counting, 3) == 3
    assert UnorderedSet().f_evaluations(task.logits, counting, 6) == 4
    counted.clear()
    UnorderedSet()(task.logits, counting, 3)
    assert counted[1:] == [3]  # after the one-sample call that tells which dimensions f couples


def test_finite_on_extreme_logits():
    generator = torch.Generator().manual_seed(5)
    for classes, scale, dtype in [
        (2, 1e3, torch.float32),
        (1000, 1e3, torch.float64),
        (7, 0.0, torch.float32),
    ]:
        for peaked in (False, True):
            logits = scale * torch.randn(3, 2, classes, generator=generator)
            if peaked:
                logits = torch.full((3, 2, classes), -scale)
                logits[..., 0] = scale
            logits = logits.to(dtype).requires_grad_()
            weight = torch.ones(classes, dtype=dtype, requires_grad=True)

            def f(z: torch.Tensor, weight: torch.Tensor = weight) -> torch.Tensor:
                return ((z * weight).sum(-1) - 0.3).pow(2).sum(-1)  # (S, 3): couples the 2 variables of a row

            surrogate = UnorderedSet()(logits, f, 3)
            gradients = torch.autograd.grad(surrogate.sum(), [logits, weight])
            assert surrogate.shape == (3,) and bool(torch.isfinite(surrogate).all())
            assert all(bool(torch.isfinite(gradient).all()) for gradient in gradients)
