"""Bring your own task: ``task=custom task.factory=MODULE:FUNCTION`` runs a task defined outside ``bench``.

``Coins`` below exists only in this test module. It goes through a real Hydra multirun sweep
(``python -m bench -m ...``) and ``python -m bench.report``, exactly as a user's task would, and the probes
on it use its own analytic reference gradient. Factories that cannot be imported or that return something
that is not a task are refused with a ConfigError (exit code 2) that says what to fix.
"""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from bench.formats.errors import ConfigError
from bench.run.build import setup
from bench.tasks.base import Task
from tests.helpers import run_cli


class Coins(Task):
    """D Bernoulli coins b_d with p_d = softmax(logits_d)₁; f(b) = Σ_d w_d b_d + c·b₀b₁ (couples b₀, b₁).

    E f = Σ_d w_d p_d + c p₀p₁ exactly, so the reference gradient is analytic. The optimum sets p_d → 0
    where w_d > 0 and p_d → 1 where w_d < 0.
    """

    latent = "categorical"
    reference = "analytic"

    def __init__(self, dim: int = 3, coupling: float = -1.0) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(dim, 2))
        self.register_buffer("weights", torch.linspace(0.5, -0.5, dim))
        self.coupling = coupling

    def distribution(self, batch=None) -> Tensor:
        return self.logits

    def objective(self, batch=None):
        def f(z: Tensor) -> Tensor:  # z: (S, D, 2) one-hot -> (S,)
            bits = z[..., 1]
            return bits @ self.weights + self.coupling * bits[..., 0] * bits[..., 1]

        return f

    def exact_objective(self) -> Tensor:
        p = self.logits.softmax(-1)[:, 1]
        return p @ self.weights + self.coupling * p[0] * p[1]

    def probed_parameters(self) -> dict[str, Tensor]:
        return {"logits": self.logits}

    def reference_gradient(self, batch=None) -> list[Tensor]:
        with torch.enable_grad():
            return list(torch.autograd.grad(self.exact_objective(), [self.logits]))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        return {"objective": float(self.exact_objective())}


def make_coins(dim: int = 3, coupling: float = -1.0) -> Coins:
    return Coins(dim=dim, coupling=coupling)


def make_nothing() -> int:
    return 42


class Unlabelled(Coins):
    latent = ""


class Unprobed(Task):
    latent = "categorical"

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(2, 2))

    def distribution(self, batch=None) -> Tensor:
        return self.logits

    def objective(self, batch=None):
        return lambda z: z[..., 1].sum(-1)

    def evaluate(self) -> dict[str, float]:
        return {}


class NoReference(Coins):
    reference_gradient = Task.reference_gradient  # claims reference = analytic, but does not give it


class Frozen(Coins):
    def __init__(self) -> None:
        super().__init__()
        self.logits.requires_grad_(False)


class ForeignProbe(Coins):
    def probed_parameters(self) -> dict[str, Tensor]:
        return {"elsewhere": torch.zeros(3, 2, requires_grad=True)}


FACTORY = "tests.tasks.test_custom_task:make_coins"


def test_sweep_and_report_on_a_task_defined_in_this_module(tmp_path):
    # reparam cannot differentiate Bernoulli coins: those two runs are recorded as skipped, the sweep goes on.
    sweep = tmp_path / "sweep"
    result = run_cli(
        "bench",
        "-m",
        "task=custom",
        f"task.factory={FACTORY}",
        "task.name=coins",
        "+task.dim=4",
        "estimator=score_function,disarm,reparam",
        "seed=0,1",
        "steps=40",
        "probe.every=20",
        "probe.draws=400",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr
    runs = [json.loads(path.read_text()) for path in sweep.glob("*/summary.json")]
    assert len(runs) == 6
    assert {(r["estimator"], r["status"]) for r in runs} == {
        ("score_function", "ok"),
        ("disarm", "ok"),
        ("reparam", "skipped"),
    }
    for run in runs:
        assert run["task"] == "coins"
        if run["status"] == "ok":
            assert run["reference"] == "analytic" and run["steps"] == 40
            # Both estimators are unbiased: against the task's own analytic gradient the probe's mean is off
            # by about one standard error; 4 SE is the tolerance (fixed seeds, 400 draws).
            assert run["grad_bias"] < 4 * run["grad_bias_se"], run
            assert run["final_loss"] < -0.25  # trained: E f starts at Σ_d w_d/2 + c/4 = 0 − 0.25
    skipped = next(r for r in runs if r["status"] == "skipped")
    assert "does not fit task 'coins'" in skipped["error"] and "disarm" in skipped["error"]

    report = run_cli("bench.report", str(sweep))
    assert report.returncode == 0, report.stderr
    summary = pd.read_csv(sweep / "report" / "summary.csv")
    assert len(summary) == 6 and set(summary["task"]) == {"coins"}
    assert set(summary.loc[summary["status"] == "ok", "estimator"]) == {"score_function", "disarm"}
    text = (sweep / "report" / "report.md").read_text()
    assert "coins" in text and "disarm" in text
    assert (sweep / "report" / "coins_objective.png").stat().st_size > 10_000


def test_the_factory_gets_the_other_task_keys_and_the_runner_uses_its_task(config_factory):
    config = config_factory("task=custom", f"task.factory={FACTORY}", "+task.dim=5", "estimator=disarm")
    task, _, optimizer = setup(config)
    assert type(task) is Coins and task.logits.shape == (5, 2)
    assert optimizer.param_groups[0]["params"] == [task.logits]


def test_a_yaml_of_your_own_with_a_target(config_factory, tmp_path):
    # task.factory may be a YAML file whose _target_ names the factory; task keys override its arguments.
    path = tmp_path / "coins.yaml"
    path.write_text(f"_target_: {FACTORY.replace(':', '.')}\ndim: 2\ncoupling: 0.5\n")
    task, _, _ = setup(config_factory("task=custom", f"task.factory={path}", "+task.coupling=2.0"))
    assert type(task) is Coins and task.logits.shape == (2, 2) and task.coupling == 2.0
    # A task config of your own may also name the factory function as its _target_ directly.
    config = config_factory("task=custom")
    config.task = OmegaConf.create({"name": "coins", "_target_": FACTORY.replace(":", "."), "dim": 6})
    task, _, _ = setup(config)
    assert type(task) is Coins and task.logits.shape == (6, 2)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ([], "task=custom needs task.factory"),
        (["task.factory=no_such_package.tasks:make"], "could not import module 'no_such_package.tasks'"),
        (
            ["task.factory=tests.tasks.test_custom_task:no_such_function"],
            "has no attribute 'no_such_function'",
        ),
        (["task.factory=not a factory"], "is not of the form MODULE:FUNCTION"),
        (["task.factory=tests.tasks.test_custom_task:FACTORY"], "names a str, not a function"),
        (["task.factory=tests.tasks.test_custom_task:make_nothing"], "returned a int, not a task"),
        ([f"task.factory={FACTORY}", "+task.colour=red"], "unexpected keyword argument 'colour'"),
        (["task.factory=tests.tasks.test_custom_task:Unlabelled"], "declares latent = ''"),
        (["task.factory=tests.tasks.test_custom_task:Unprobed"], r"does not implement probed_parameters\(\)"),
        (
            ["task.factory=tests.tasks.test_custom_task:NoReference"],
            r"does not implement reference_gradient\(\)",
        ),
        (["task.factory=tests.tasks.test_custom_task:Frozen"], "has no trainable parameters"),
        (
            ["task.factory=tests.tasks.test_custom_task:ForeignProbe"],
            r"probed_parameters\(\)\['elsewhere'\] must be",
        ),
        (["task.factory=missing.yaml"], "no such YAML file"),
    ],
)
def test_bad_factories_are_config_errors(config_factory, overrides, message):
    with pytest.raises(ConfigError, match=message):
        setup(config_factory("task=custom", *overrides))


def test_a_yaml_without_target_is_refused(config_factory, tmp_path):
    path = tmp_path / "task.yaml"
    path.write_text("dim: 2\n")
    with pytest.raises(ConfigError, match="must be a mapping with a _target_"):
        setup(config_factory("task=custom", f"task.factory={path}"))


def test_an_estimator_that_does_not_fit_the_custom_task_is_skipped(config_factory):
    config = config_factory("task=custom", f"task.factory={FACTORY}", "estimator=measure_valued")
    with pytest.raises(ConfigError, match="latent variables are categorical") as error:
        setup(config)
    assert error.value.status == "skipped"


def test_the_command_line_says_what_is_missing_and_exits_2(tmp_path):
    result = run_cli("bench", "task=custom", "steps=5", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    assert "task=custom needs task.factory" in result.stderr and "Traceback" not in result.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


def test_coins_reference_gradient_is_right():
    # The test task's own analytic gradient, checked by enumerating the 2^D outcomes.
    task = make_coins(dim=3, coupling=-1.0)
    with torch.no_grad():
        task.logits.copy_(torch.tensor([[0.0, 0.3], [0.2, -0.5], [0.0, 1.0]]))
    bits = torch.tensor([[(n >> d) & 1 for d in range(3)] for n in range(8)], dtype=torch.float32)
    with torch.enable_grad():
        p = task.logits.softmax(-1)[:, 1]
        probability = (bits * p + (1 - bits) * (1 - p)).prod(-1)
        values = task.objective()(torch.stack([1 - bits, bits], -1))
        expected = (probability * values).sum()
        enumerated = torch.autograd.grad(expected, task.logits)[0]
    assert torch.allclose(enumerated, task.reference_gradient()[0], atol=1e-6)
    assert math.isclose(float(expected.detach()), task.evaluate()["objective"], abs_tol=1e-6)
