"""Every Python block of the README and docs/ runs as written, so that none can rot; the examples a user
copies also do what their text says.

- README, "Use an estimator in your own model": feature gates trained through the score function and REBAR
  learn to open the two features that matter and close the others; REBAR's η and λ are trained by their own
  optimizer (they move) and never by the model's.
- The user guide, "Use an estimator in your own model": the hard-attention layer learns through each
  estimator (expected loss far below the 1.75 of a random choice) and the Bernoulli and Gaussian snippets
  write gradients.
- The user guide, "Bring your own task": ``my_task.py`` gives a task that passes the harness's check of the
  protocol (``tests/docs/test_commands.py`` runs it with the README's command).

A block that needs a long run may be marked ``<!-- not run: the reason -->`` on the line above it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable

import pytest
import torch

import estimators
from bench.tasks.custom import check_task
from tests.docs.pages import Block, all_blocks

BLOCKS = all_blocks("python")


def readme_gates(namespace: dict) -> None:
    for name, probabilities in namespace["p_open"].items():
        useful, useless = probabilities[:2], probabilities[2:]
        # From p = 0.5: the two features that matter are kept, the four others mostly dropped.
        assert min(useful) > 0.9 and sum(useless) / len(useless) < 0.5, (name, probabilities)
    rebar = namespace["estimator"]
    assert isinstance(rebar, estimators.REBAR)
    own = rebar.own_parameters()
    assert own and not any(
        torch.equal(a, b) for a, b in zip(own, estimators.REBAR().own_parameters(), strict=True)
    )
    in_model_optimizer = {id(p) for group in namespace["optimizer"].param_groups for p in group["params"]}
    assert not in_model_optimizer & {id(p) for p in own}, "the model's optimizer holds REBAR's η or λ"


def guide_attention(namespace: dict) -> None:
    losses = namespace["expected_loss"]
    assert set(losses) == {"score_function", "gumbel_st", "exact"}
    # A random choice of item scores E‖x_i − x_j‖²/dim = 2 · 7/8 = 1.75; all three must have learned.
    assert all(value < 0.5 for value in losses.values()), losses
    assert namespace["theta"].grad is not None and namespace["theta"].grad.abs().sum() > 0
    assert namespace["mean"].grad is not None and namespace["log_scale"].grad is not None


def guide_task(namespace: dict) -> None:
    task = check_task(namespace["make_task"](), "my_task:make_task")
    assert task.latent == "categorical" and task.reference == "exact"
    assert set(task.evaluate()) >= {"objective"}


CHECKS: dict[tuple[str, str], Callable[[dict], None]] = {
    ("README.md", "Use an estimator in your own model"): readme_gates,
    ("guide.md", "Use an estimator in your own model"): guide_attention,
    ("guide.md", "Bring your own task"): guide_task,
}


def run_block(block: Block) -> dict:
    namespace: dict = {"__name__": f"docs_example_{block.line}"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest on a shared machine
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(block.code, block.name, "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    return namespace


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.not_run is None], ids=lambda block: block.name)
def test_every_python_block_runs(block):
    namespace = run_block(block)
    check = CHECKS.get((block.page.name, block.heading))
    if check is not None:
        check(namespace)


def test_the_checked_examples_exist():
    # Every check above finds its block (a renamed heading would otherwise skip it silently).
    found = {(block.page.name, block.heading) for block in BLOCKS if block.not_run is None}
    assert set(CHECKS) <= found, set(CHECKS) - found


def test_a_wrong_example_fails_its_check():
    # Negative control: an untrained gate model (p = 0.5 everywhere) and an untouched REBAR fail the check.
    untrained = {"p_open": {"REBAR": [0.5] * 6}, "estimator": estimators.REBAR(), "optimizer": None}
    with pytest.raises(AssertionError):
        readme_gates(untrained)
