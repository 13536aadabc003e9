"""Lookahead (optim/lookahead.py) against a direct transcription of Algorithm 1 of Zhang et al. (2019)."""

from __future__ import annotations

import copy
import io
from functools import partial

import pytest
import torch
from torch import nn

from optim.lookahead import Lookahead

K, ALPHA, LR = 3, 0.5, 0.1


def quadratic_gradient(theta: torch.Tensor, step: int) -> torch.Tensor:
    """Gradient of a step-dependent quadratic ½‖A θ − b_t‖², so every step sees a different gradient."""
    generator = torch.Generator().manual_seed(step)
    a = torch.randn(4, 4, generator=generator, dtype=torch.float64)
    b = torch.randn(4, generator=generator, dtype=torch.float64)
    return a.T @ (a @ theta - b)


def run_lookahead(optimizer: torch.optim.Optimizer, parameter: nn.Parameter, steps: range) -> None:
    for step in steps:
        optimizer.zero_grad()
        parameter.grad = quadratic_gradient(parameter.detach(), step)
        optimizer.step()


def test_matches_the_paper_with_sgd_over_3k_plus_1_steps():
    theta0 = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    parameter = nn.Parameter(theta0.clone())
    optimizer = Lookahead(partial(torch.optim.SGD, lr=LR), [parameter], k=K, alpha=ALPHA)
    run_lookahead(optimizer, parameter, range(3 * K + 1))

    # Algorithm 1, written out: phi slow weights, theta fast weights, A = plain SGD.
    phi, step = theta0.clone(), 0
    theta = phi.clone()
    for _ in range(3):
        theta = phi.clone()
        for _ in range(K):
            theta = theta - LR * quadratic_gradient(theta, step)
            step += 1
        phi = phi + ALPHA * (theta - phi)
    theta = phi.clone()
    theta = theta - LR * quadratic_gradient(theta, step)  # the (3k + 1)-th step, mid-cycle
    torch.testing.assert_close(parameter.detach(), theta, rtol=0, atol=1e-12)
    torch.testing.assert_close(optimizer.state[parameter]["slow"], phi, rtol=0, atol=1e-12)


@pytest.mark.parametrize("inner_state", ["keep", "reset"])
def test_matches_the_paper_with_adam_keeping_or_resetting_its_state(inner_state):
    theta0 = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    parameter = nn.Parameter(theta0.clone())
    optimizer = Lookahead(
        partial(torch.optim.Adam, lr=LR), [parameter], k=K, alpha=ALPHA, inner_state=inner_state
    )
    run_lookahead(optimizer, parameter, range(3 * K + 1))

    # The transcription drives its own Adam on a separate tensor; "reset" means a fresh Adam each cycle.
    fast = nn.Parameter(theta0.clone())
    adam = torch.optim.Adam([fast], lr=LR)
    phi, step = theta0.clone(), 0
    for cycle in range(4):
        with torch.no_grad():
            fast.copy_(phi)
        if inner_state == "reset" and cycle > 0:
            adam = torch.optim.Adam([fast], lr=LR)
        for _ in range(K if cycle < 3 else 1):
            fast.grad = quadratic_gradient(fast.detach(), step)
            adam.step()
            step += 1
        if cycle < 3:
            phi = phi + ALPHA * (fast.detach() - phi)
    torch.testing.assert_close(parameter.detach(), fast.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(optimizer.state[parameter]["slow"], phi, rtol=0, atol=1e-12)


def test_keep_and_reset_differ():
    results = []
    for inner_state in ("keep", "reset"):
        parameter = nn.Parameter(torch.ones(4, dtype=torch.float64))
        optimizer = Lookahead(partial(torch.optim.Adam, lr=LR), [parameter], k=K, inner_state=inner_state)
        run_lookahead(optimizer, parameter, range(2 * K + 1))
        results.append(parameter.detach().clone())
    assert not torch.allclose(results[0], results[1])


def make_model(seed: int) -> tuple[nn.Module, Lookahead]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))
    return model, Lookahead(torch.optim.Adam(model.parameters(), lr=0.05), k=5, alpha=0.5)


def train_model(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        inputs, targets = torch.randn(16, 3, generator=generator), torch.randn(16, 1, generator=generator)
        optimizer.zero_grad()
        ((model(inputs) - targets) ** 2).mean().backward()
        optimizer.step()


def test_state_dict_saved_mid_cycle_continues_identically():
    model, optimizer = make_model(0)
    train_model(model, optimizer, range(7))  # 7 = one slow update + 2 steps into the next cycle
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    assert saved["optimizer"]["inner_steps"] == 7

    fresh_model, fresh = make_model(123)  # different initial weights: everything must come from the file
    fresh_model.load_state_dict(saved["model"])
    fresh.load_state_dict(saved["optimizer"])
    train_model(model, optimizer, range(7, 18))
    train_model(fresh_model, fresh, range(7, 18))
    for original, resumed in zip(model.parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(original, resumed)
        assert torch.equal(optimizer.state[original]["slow"], fresh.state[resumed]["slow"])
    assert fresh.inner_steps == optimizer.inner_steps == 18
    # The reloaded optimizer still shares its groups with its inner optimizer.
    assert fresh.param_groups is fresh.inner.param_groups


def test_without_the_slow_weights_a_resumed_run_differs():
    """The check above can fail: dropping the slow weights from the state dict changes the continuation."""
    model, optimizer = make_model(0)
    train_model(model, optimizer, range(7))
    state = copy.deepcopy(optimizer.state_dict())
    fresh_model, fresh = make_model(123)
    fresh_model.load_state_dict(model.state_dict())
    state["slow"] = [None] * len(state["slow"])
    fresh.load_state_dict(state)
    train_model(model, optimizer, range(7, 12))
    train_model(fresh_model, fresh, range(7, 12))
    assert not all(
        torch.equal(a, b) for a, b in zip(model.parameters(), fresh_model.parameters(), strict=True)
    )


def test_lr_scheduler_changes_the_inner_learning_rate():
    parameter = nn.Parameter(torch.zeros(2))
    inner = torch.optim.SGD([parameter], lr=1.0)
    optimizer = Lookahead(inner, k=100, alpha=0.5)  # no slow update within this test
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)
    for expected_lr in (1.0, 0.1, 0.01):
        assert inner.param_groups[0]["lr"] == pytest.approx(expected_lr)
        before = parameter.detach().clone()
        parameter.grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
        # the update the inner SGD made used the scheduled learning rate
        torch.testing.assert_close(before - parameter.detach(), torch.full((2,), expected_lr))


def test_add_param_group_reaches_the_inner_optimizer():
    first, second = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))
    optimizer = Lookahead(partial(torch.optim.SGD, lr=1.0), [first], k=2, alpha=0.5)
    optimizer.add_param_group({"params": [second], "lr": 0.5})
    assert len(optimizer.inner.param_groups) == 2 and optimizer.param_groups is optimizer.inner.param_groups
    for _ in range(2):
        first.grad, second.grad = torch.ones(2), torch.ones(3)
        optimizer.step()
    # two inner steps then the slow update: θ = φ₀ + α(θ_k − φ₀) = 0.5 · (−2 lr)
    torch.testing.assert_close(first.detach(), torch.full((2,), -1.0))
    torch.testing.assert_close(second.detach(), torch.full((3,), -0.5))


def test_slow_weights_context_evaluates_on_slow_weights_and_restores_fast():
    parameter = nn.Parameter(torch.zeros(2))
    optimizer = Lookahead(partial(torch.optim.SGD, lr=1.0), [parameter], k=5, alpha=0.5)
    for _ in range(3):
        parameter.grad = torch.ones(2)
        optimizer.step()
    fast = parameter.detach().clone()
    assert torch.equal(fast, torch.full((2,), -3.0))
    with optimizer.slow_weights():
        assert torch.equal(parameter.detach(), torch.zeros(2))
    assert torch.equal(parameter.detach(), fast)


def test_works_with_a_closure_and_deepcopy():
    model, optimizer = make_model(0)
    inputs, targets = torch.randn(8, 3), torch.randn(8, 1)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = ((model(inputs) - targets) ** 2).mean()
        loss.backward()
        return loss

    assert optimizer.step(closure) is not None
    clone = copy.deepcopy(optimizer)
    assert clone.param_groups is clone.inner.param_groups and clone.inner_steps == 1


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"k": 0}, "k"),
        ({"k": 2.5}, "k"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.5}, "alpha"),
        ({"inner_state": "average"}, "inner_state"),
    ],
)
def test_invalid_arguments_are_named(options, named):
    with pytest.raises(ValueError, match=f"Lookahead: {named}"):
        Lookahead(partial(torch.optim.SGD, lr=0.1), [nn.Parameter(torch.zeros(1))], **options)


def test_inner_and_params_misuse_is_explained():
    parameter = nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="do not pass params too"):
        Lookahead(torch.optim.SGD([parameter], lr=0.1), [parameter])
    with pytest.raises(ValueError, match="pass params"):
        Lookahead(partial(torch.optim.SGD, lr=0.1))
    with pytest.raises(ValueError, match="inner must be"):
        Lookahead("sgd", [parameter])
