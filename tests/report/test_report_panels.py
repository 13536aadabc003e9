"""A task's own report sections come from its config (``task.report``), not from the report's code.

``Lanterns`` exists only in this module and records a metric of its own, ``sparsity``. It runs through the
real command line (``task=custom task.factory=...``) with a declaration on the command line; the report then
shows that metric's table column and figure, although no file of ``bench/report/`` names the task or the
metric.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from bench.report import load_runs, write_report
from bench.report.declarations import DeclarationError, parse_declaration, task_sections
from bench.tasks.base import Task
from tests.helpers import ROOT, run_cli

TASK_NAME = "lanterns"
METRIC = "sparsity"


class Lanterns(Task):
    """D lanterns, each lit with probability p_d = softmax(logits_d)₁; f(b) = Σ_d (b_d − t_d)², t_d ∈ [0, 1].

    E f = Σ_d p_d(1 − 2t_d) + t_d², so the reference gradient is analytic; ``sparsity`` is the fraction of
    lanterns more likely dark than lit.
    """

    latent = "categorical"
    reference = "analytic"

    def __init__(self, dim: int = 6) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(dim, 2))
        self.register_buffer("targets", torch.linspace(0.1, 0.6, dim))

    def distribution(self, batch=None) -> Tensor:
        return self.logits

    def objective(self, batch=None):
        def f(z: Tensor) -> Tensor:  # z: (S, D, 2) one-hot -> (S,)
            return ((z[..., 1] - self.targets) ** 2).sum(-1)

        return f

    def expected(self) -> Tensor:
        lit = self.logits.softmax(-1)[:, 1]
        return (lit * (1 - 2 * self.targets) + self.targets**2).sum()

    def probed_parameters(self) -> dict[str, Tensor]:
        return {"logits": self.logits}

    def reference_gradient(self, batch=None) -> list[Tensor]:
        with torch.enable_grad():
            return list(torch.autograd.grad(self.expected(), [self.logits]))

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        lit = self.logits.softmax(-1)[:, 1]
        return {"objective": float(self.expected()), METRIC: float((lit < 0.5).float().mean())}


def make_task(dim: int = 6) -> Lanterns:
    return Lanterns(dim=dim)


DECLARATION = (
    "+task.report={sections: [{name: dark, text: 'Lanterns left dark at the end:', "
    f"columns: [{{metric: {METRIC}, title: 'dark fraction', value: last}}, "
    f"{{metric: {METRIC}, title: 'dark fraction (training)', value: training}}], "
    f"panels: [{{metric: {METRIC}, title: 'fraction of dark lanterns'}}]}}]}}"
)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    sweep = tmp_path_factory.mktemp("panels") / "sweep"
    result = run_cli(
        "bench",
        "-m",
        "task=custom",
        "task.factory=tests.report.test_report_panels:make_task",
        f"task.name={TASK_NAME}",
        DECLARATION,
        "estimator=gumbel_st",
        "seed=0,1",
        "steps=20",
        "probe.every=10",
        "probe.draws=4",
        # A declaration on the command line would make the folder named by the overrides too long to exist.
        "hydra.sweep.subdir=job${hydra.job.num}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr
    return write_report(sweep)


def test_a_declared_panel_and_column_of_a_task_of_your_own(report):
    figure = report / f"{TASK_NAME}_dark.png"
    assert figure.stat().st_size > 10_000 and (report / f"{TASK_NAME}_dark.pdf").exists()
    text = (report / "report.md").read_text()
    section = text[text.index("Lanterns left dark at the end:") :]
    header = next(line for line in section.splitlines() if line.startswith("| estimator |"))
    assert header == "| estimator | seeds | dark fraction | dark fraction (training) | runs ok/total |"
    assert f"![{figure.name}]({figure.name})" in section
    # The column's values are each configuration's mean over seeds of the metric at the last probe.
    curves = pd.read_csv(report / "curves.csv")
    summary = pd.read_csv(report / "summary.csv").set_index("run")
    last = curves[(curves["metric"] == METRIC) & (curves["step"] == 20)].set_index("run")["value"]
    mean = last.groupby(summary.loc[last.index, "label"]).mean()
    row = next(line for line in section.splitlines() if line.startswith("| gumbel_st | 2 |"))
    assert row.split("|")[3].strip().startswith(f"{mean['gumbel_st']:.4g}")


def test_the_report_package_names_no_task_and_no_task_metric():
    sources = sorted((ROOT / "bench" / "report").rglob("*.py"))
    assert sources
    for path in sources:
        text = path.read_text().lower()
        for word in (TASK_NAME, METRIC):
            assert word not in text, f"{path} mentions {word!r}"


def test_a_declaration_off_the_schema_is_refused_with_where_and_what():
    with pytest.raises(DeclarationError, match=r"sections\[0\]\.panels\[0\]: unknown key\(s\) scale"):
        parse_declaration({"sections": [{"name": "a", "panels": [{"metric": "m", "scale": "log"}]}]})
    with pytest.raises(DeclarationError, match=r"value is 'final'; it must be one of last, training"):
        parse_declaration({"sections": [{"name": "a", "columns": [{"metric": "m", "value": "final"}]}]})
    with pytest.raises(DeclarationError, match="names a file"):
        parse_declaration({"sections": [{"name": "a/b", "panels": [{"metric": "m"}]}]})


def test_a_declaration_in_a_task_config_of_your_own(tmp_path):
    # The other way in: a task YAML of your own (--config-dir) holding the factory and a report node.
    conf = tmp_path / "conf" / "task"
    conf.mkdir(parents=True)
    (conf / f"{TASK_NAME}.yaml").write_text(
        f"name: {TASK_NAME}\n"
        "_target_: bench.tasks.custom.from_factory\n"
        "factory: tests.report.test_report_panels:make_task\n"
        "report:\n"
        "  sections:\n"
        "    - name: dark\n"
        "      panels:\n"
        f"        - metric: {METRIC}\n"
        "          title: fraction of dark lanterns\n"
    )
    run = tmp_path / "run"
    result = run_cli(
        "bench",
        f"--config-dir={tmp_path / 'conf'}",
        f"task={TASK_NAME}",
        "estimator=score_function",
        "steps=20",
        "probe.every=10",
        "probe.draws=4",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr
    # The declaration reached the report's tables through the run's resolved config (the test above shows
    # what the report makes of one).
    summaries = load_runs(run).summaries
    assert summaries["task"].tolist() == [TASK_NAME]
    (section,) = task_sections(summaries["task_report"], TASK_NAME)
    assert section.name == "dark" and section.panels[0].metric == METRIC


def test_a_panels_bounds_clip_its_bands_and_bad_bounds_are_refused():
    import matplotlib.pyplot as plt
    import pandas as pd

    from bench.report.declarations import DeclarationError, Panel, parse_panel
    from bench.report.figures import band_notes, draw_panel

    panel = parse_panel({"metric": "codes_used", "low": 0, "high": 1}, "panels[0]")
    assert (panel.low, panel.high) == (0.0, 1.0)
    with pytest.raises(DeclarationError, match="high must be a number"):
        parse_panel({"metric": "codes_used", "high": "one"}, "panels[0]")
    # Three seeds of a fraction at 0.1, 0.5 and 0.95: its t-band runs below 0 and above 1 unless clipped.
    data = pd.DataFrame(
        {
            "label": "a",
            "run": [f"r{seed}" for seed in range(3) for _ in range(2)],
            "seed": [seed for seed in range(3) for _ in range(2)],
            "step": [0, 10] * 3,
            "value": [0.1, 0.1, 0.5, 0.5, 0.95, 0.95],
            "status": "ok",
            "stopped_at": float("nan"),
        }
    )
    figure, axis = plt.subplots()
    try:
        clipped = draw_panel(axis, panel, data, {"a": "C0"}, annotate=False)
        unclipped = draw_panel(axis, Panel("codes_used", "codes"), data, {"a": "C0"}, annotate=False)
    finally:
        plt.close(figure)
    assert clipped["low"].min() >= 0 and clipped["high"].max() <= 1
    assert unclipped["low"].min() < 0 and unclipped["high"].max() > 1  # the negative control
    assert "bands clipped at the metric's bounds" in band_notes(clipped, [])
