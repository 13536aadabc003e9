"""`python -m bench.report DIR` on a real sweep: summary.csv, figures, and a Markdown report."""

import json
import shutil

import pandas as pd
import pytest

from bench.cli.report import main
from bench.report import load_runs, mean_ci, write_report
from bench.report.labels import labels, settings
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "sweep"
    result = run_cli(
        "bench",
        "-m",
        "task=toy",
        "estimator=score_function,st,exact",
        "seed=0,1",
        "steps=40",
        "probe.every=20",
        "probe.draws=16",
        f"hydra.sweep.dir={root}",
    )
    assert result.returncode == 0, result.stderr
    return root


def test_report_writes_summary_figures_and_markdown(sweep):
    result = run_cli("bench.report", str(sweep))
    assert result.returncode == 0, result.stderr
    report = sweep / "report"
    summary = pd.read_csv(report / "summary.csv")
    assert len(summary) == 6 and set(summary["label"]) == {"score_function", "st", "exact"}
    for stem in ("toy_objective", "toy_variance", "toy_bias_variance", "toy_grad_variance"):
        assert (report / f"{stem}.png").stat().st_size > 10_000, stem
        assert (report / f"{stem}.pdf").exists()
    text = (report / "report.md").read_text()
    assert "95% intervals over seeds" in text and "| estimator | seeds | final_loss |" in text
    comparisons = pd.read_csv(report / "comparisons.csv")
    assert list(comparisons.columns) == [
        "task",
        "metric",
        "a",
        "b",
        "estimate",
        "ci_low",
        "ci_high",
        "p",
        "p_holm",
    ]
    assert "too few seeds for rank intervals" in text  # 2 seeds
    assert "![toy_objective.png](toy_objective.png)" in text
    # The table's numbers are the mean over the two seeds of what the runs wrote.
    runs = [json.loads(p.read_text()) for p in sweep.rglob("summary.json") if "report" not in p.parts]
    st = [r["final_loss"] for r in runs if r["estimator"] == "st"]
    assert f"{sum(st) / 2:.4g} ±" in text
    # Idempotent: a second run reads the same runs (not its own output) and writes the same summary.
    assert run_cli("bench.report", str(sweep)).returncode == 0
    pd.testing.assert_frame_equal(pd.read_csv(report / "summary.csv"), summary)


def test_report_skips_a_malformed_summary_with_a_warning(sweep, tmp_path):
    broken = sweep / "broken_run"
    broken.mkdir(exist_ok=True)
    (broken / "summary.json").write_text("{not json")
    with pytest.warns(UserWarning, match="skipping"):
        runs = load_runs(sweep)
    assert len(runs.summaries) == 6 and runs.skipped_files
    broken.joinpath("summary.json").unlink()
    broken.rmdir()


def test_mean_ci_is_the_t_interval():
    mean, half, count = mean_ci(pd.Series([1.0, 2.0, 3.0]))
    # t_{0.975, 2} = 4.303; sd = 1; half-width = 4.303 / sqrt(3)
    assert (mean, count) == (2.0, 3) and half == pytest.approx(4.3027 / 3**0.5, rel=1e-4)


def test_report_on_a_folder_without_runs_exits_2(tmp_path):
    result = run_cli("bench.report", str(tmp_path))
    assert result.returncode == 2 and "no run summaries" in result.stderr


def test_a_run_redone_with_force_shares_the_label_of_its_seeds(tmp_path):
    # Seeds 0 and 1 of one configuration, each run again with force=true into a folder of its own (as a run
    # redone elsewhere below the report folder): force changes how a run is scheduled, not what it computes.
    result = run_cli(
        "bench",
        "-m",
        "task=toy",
        "estimator=st",
        "seed=0,1",
        "force=false,true",
        "steps=20",
        "probe.draws=4",
        "hydra.sweep.subdir=job${hydra.job.num}",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    summaries = load_runs(tmp_path).summaries
    assert len(summaries) == 4 and set(summaries["seed"]) == {0, 1}
    assert set(summaries["label"]) == {"st"}, summaries[["run", "label"]]


def config(estimator: dict, optimizer: dict, task: dict | None = None, **top) -> dict:
    """A resolved config as Hydra saves it: groups, then top-level keys."""
    task = {"name": "toy", "_target_": "bench.tasks.toy.Toy", "t": 0.45, **(task or {})}
    return {"task": task, "estimator": estimator, "optimizer": optimizer, "seed": 0, "steps": 20, **top}


def label_runs(*runs: tuple[dict, dict]) -> list[str]:
    """Labels of runs given as (summary fields, resolved config)."""
    frame = pd.DataFrame([{"task": "toy", "samples": 1, **summary} for summary, _ in runs])
    return labels(frame, {index: settings(config) for index, (_, config) in enumerate(runs)}).tolist()


def test_labels_name_what_varies_between_configurations_of_the_same_names():
    adam = {"name": "adam", "lr": 0.01}
    gumbel = {"name": "gumbel", "tau": 1.0}
    rloo = {"name": "rloo", "baseline": "loo"}
    names = {"optimizer": "adam"}
    # estimator.tau differs between gumbel and rloo only because they are different estimators.
    assert label_runs(
        ({"estimator": "gumbel", **names}, config(gumbel, adam)),
        ({"estimator": "rloo", **names}, config(rloo, adam)),
    ) == ["gumbel", "rloo"]
    # Within gumbel it varies: named, without its group prefix; seed, force and threads never are.
    assert label_runs(
        ({"estimator": "gumbel", **names}, config(gumbel, adam)),
        ({"estimator": "gumbel", **names}, config({**gumbel, "tau": 0.5}, adam, seed=1, force=True)),
        ({"estimator": "rloo", **names}, config(rloo, adam)),
    ) == ["gumbel tau=1.0", "gumbel tau=0.5", "rloo"]
    # An optimizer study: the estimator is the same for all, so the label is the optimizer alone; lr differs
    # between adam and sgd, which are different optimizers.
    none = {"name": "none"}
    assert label_runs(
        ({"estimator": "none", "optimizer": "adam"}, config(none, adam)),
        ({"estimator": "none", "optimizer": "sgd"}, config(none, {"name": "sgd", "lr": 0.1})),
    ) == ["adam", "sgd"]
    # A task setting and a top-level setting that vary; S from the summary where it varies.
    assert label_runs(
        ({"estimator": "st", **names}, config({"name": "st"}, adam, task={"t": 0.3})),
        ({"estimator": "rloo", **names, "samples": 2}, config(rloo, adam, steps=40)),
    ) == ["st S=1 steps=20 t=0.3", "rloo S=2 steps=40 t=0.45"]


def test_a_report_rebuilt_from_its_tables_alone_is_the_same(sweep, tmp_path):
    original = write_report(sweep, tmp_path / "original")
    tables = tmp_path / "tables"  # away from the run folders
    tables.mkdir()
    for name in ("summary.csv", "curves.csv"):
        shutil.copy(original / name, tables / name)
    curves = pd.read_csv(tables / "curves.csv")
    assert list(curves.columns) == ["run", "step", "metric", "value"] and curves["run"].nunique() == 6
    assert main(["--from-tables", str(tables), "--out", str(tmp_path / "rebuilt")]) == 0
    rebuilt = tmp_path / "rebuilt"
    assert (rebuilt / "report.md").read_text() == (original / "report.md").read_text()
    figures = sorted(path.name for path in original.glob("*.png"))
    assert figures and figures == sorted(path.name for path in rebuilt.glob("*.png"))
    assert main(["--from-tables", str(sweep)]) == 2  # a folder of runs is not a report folder
