"""``python -m bench.recommend``: an answer for the task, with evidence and caveats, in a given budget."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class

from bench.campaigns.recommend.decide import compare, still_falling
from bench.campaigns.recommend.plan import Candidate
from bench.campaigns.recommend.protocol import Outcome
from bench.cli.check import main as check
from bench.cli.recommend import main as recommend
from bench.formats.configs import CONF_DIR, config_target
from bench.formats.contract import RECOMMENDATION_FILE, recommendation_problems
from tests.helpers import run_cli
from tests.tasks.test_custom_task import Coins


@pytest.fixture(scope="module")
def toy_answer(tmp_path_factory) -> tuple[Path, object]:
    """The done-when command at a 0.3-minute budget, in one command-line call (the test's share of the suite
    is ~25 s of it)."""
    folder = tmp_path_factory.mktemp("recommend")
    result = run_cli(
        "bench.recommend",
        "task=toy",
        "task.p0=0.3",
        "recommend.budget_minutes=0.3",
        f"recommend.dir={folder}",
        timeout=600,
    )
    return folder, result


def test_the_toy_recommendation_is_an_estimator_that_declares_itself_unbiased(toy_answer):
    # On the toy task from p(b = 1) = 0.3, straight-through estimators move p the wrong way (towards t = 0.45)
    # and stall; the unbiased ones (and exact ones: leg enumerates a Bernoulli at S = 1) reach ~0.2025.
    folder, result = toy_answer
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((folder / RECOMMENDATION_FILE).read_text())
    assert recommendation_problems(document) == []
    chosen = document["recommended"]["estimator"]
    assert get_class(config_target(CONF_DIR / "estimator" / f"{chosen}.yaml")).unbiased is True
    assert document["answer"] in result.stdout and "Caveats:" in result.stdout
    assert (folder / "recommendation.md").read_text().startswith("# Recommendation for task `toy`")
    # The evidence says why: straight-through is biased at the checkpoints of the recommended trajectory.
    straight = next(item for item in document["candidates"] if item["estimator"] == "st")
    assert straight["evidence"]["rejected"] >= 1
    assert "enumeration is affordable here" in document["answer"].lower()


def test_bench_check_validates_the_recommendation_and_names_a_broken_one(toy_answer, tmp_path, capsys):
    folder, _ = toy_answer
    assert check([str(folder)]) == 0
    broken = json.loads((folder / RECOMMENDATION_FILE).read_text())
    broken["recommended"]["estimator"] = "exact"
    del broken["caveats"]
    (tmp_path / RECOMMENDATION_FILE).write_text(json.dumps(broken))
    assert check([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "lacks the field 'caveats'" in out and "never the recommendation" in out


def test_a_budget_too_small_exits_2_naming_the_smallest_that_fits(tmp_path, capsys):
    arguments = ["task=toy", "recommend.budget_minutes=0.001", f"recommend.dir={tmp_path}"]
    assert recommend([*arguments, "recommend.estimators=[rloo,st]"]) == 2
    message = capsys.readouterr().err
    assert "too small" in message and "the smallest budget that fits is about" in message


def test_an_unknown_setting_exits_2_with_a_suggestion(capsys):
    assert recommend(["task=toy", "recommend.budget_minute=1"]) == 2
    assert "did you mean recommend.budget_minutes" in capsys.readouterr().err


class Broken(Coins):
    """A task whose objective fails at every evaluation: no run can finish."""

    def objective(self, batch=None):
        def f(z):
            raise RuntimeError("this objective always fails")

        return f


def make_broken() -> Broken:
    return Broken()


def test_when_every_run_fails_there_is_no_recommendation_and_the_failures_are_listed(tmp_path, capsys):
    code = recommend(
        [
            "task=custom",
            "task.factory=tests.campaigns.test_recommend:make_broken",
            "recommend.estimators=[rloo,score_function]",
            f"recommend.dir={tmp_path}",
        ]
    )
    err = capsys.readouterr().err
    assert code in (1, 2) and "this objective always fails" in err, err
    assert not (tmp_path / RECOMMENDATION_FILE).exists()


def outcome(seed: int, score: float) -> Outcome:
    return Outcome("ok", score, "objective", Path(f"stage2/x/seed={seed}"))


def candidate(name: str) -> Candidate:
    return Candidate(name, 2, 2, "adam", True)


def test_paired_comparison_reports_ties_and_separates_a_real_difference():
    # Over 5 seeds with a large seed effect (sd 1, cancelled by pairing): b differs from a by +0.002 on
    # average with a spread of 0.009 (t = 0.5: indistinguishable); c is a + 0.1 give or take 0.001 (worse).
    generator = torch.Generator().manual_seed(0)
    seeds = list(range(100, 105))
    base = {seed: float(torch.randn(1, generator=generator)) for seed in seeds}
    wobble = dict(zip(seeds, [0.01, -0.008, 0.012, -0.006, 0.002], strict=True))
    runs = {
        "a": [outcome(seed, base[seed]) for seed in seeds],
        "b": [outcome(seed, base[seed] + wobble[seed]) for seed in seeds],
        "c": [outcome(seed, base[seed] + 0.1 + wobble[seed] / 10) for seed in seeds],
    }
    best, rows = compare(
        [candidate("a"), candidate("b"), candidate("c")], {f"{k}@2": v for k, v in runs.items()}
    )
    assert best == "a@2"
    assert rows["b@2"]["comparison"]["tied"] is True
    assert rows["c@2"]["comparison"]["tied"] is False and rows["c@2"]["comparison"]["p_holm"] < 1e-4


def test_the_still_falling_test_sees_a_falling_curve_and_not_a_flat_one(tmp_path):
    def curve(name: str, values: list[float]) -> Outcome:
        folder = tmp_path / name / "seed=1"
        folder.mkdir(parents=True)
        rows = ["step,metric,value"] + [
            f"{10 * index},objective,{value!r}" for index, value in enumerate(values)
        ]
        (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
        return Outcome("ok", values[-1], "objective", folder)

    generator = torch.Generator().manual_seed(1)
    noise = [1e-3 * float(value) for value in torch.randn(12, generator=generator)]
    falling = [
        curve(f"f{seed}", [1.0 - 0.01 * step + noise[step] for step in range(12)]) for seed in range(2)
    ]
    flat = [curve(f"c{seed}", [1.0 + noise[step] for step in range(12)]) for seed in range(2)]
    slope, p = still_falling(falling, "objective")
    assert slope < 0 and p < 1e-6
    assert still_falling(flat, "objective")[1] > 0.01
    assert math.isfinite(still_falling(flat, "objective")[0])


def test_an_unbiased_estimator_the_test_rejects_is_explained_not_left_as_a_verdict():
    from bench.campaigns.recommend.decide import unbiased_but_rejected

    def candidate(name, unbiased, rejected, p):
        evidence = {"rejected": rejected, "tested": 4, "smallest_p_holm": p}
        return {"estimator": name, "declared_unbiased": unbiased, "evidence": evidence}

    lines = unbiased_but_rejected(
        [
            candidate("rloo", True, 1, 0.02),  # marginal: a possible false rejection
            candidate("broken", True, 4, 1e-12),  # strong: check the estimator
            candidate("st", False, 4, 0.0),  # declares itself biased: nothing to explain
            candidate("leg", True, 0, 1.0),  # not rejected: nothing to explain
        ]
    )
    text = "\n".join(lines)
    assert "`rloo`" in text and "family error" in text
    assert "`broken`" in text and "bench.check unbiasedness" in text
    assert "`st`" not in text and "`leg`" not in text
