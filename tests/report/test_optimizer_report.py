"""The report's optimizer views: objective by training time and time to target (Kaplan–Meier), on known
runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.cli.report import main
from bench.report import ReportOptions, write_report

# Two configurations, two seeds each; objective measured at steps 0, 10, 20 (step × step time = time).
RUNS = {
    ("fast", 0): (1.0, [1.0, 0.8, 0.40]),  # step_time_ms, objective by step
    ("fast", 1): (1.0, [1.0, 0.7, 0.40]),
    ("slow", 0): (10.0, [1.0, 0.35, 0.20]),
    ("slow", 1): (10.0, [1.0, 0.3, 0.20]),
}


def write_runs(root: Path, best_known: float | None = None) -> None:
    for (optimizer, seed), (step_time, values) in RUNS.items():
        run = root / f"{optimizer}_{seed}"
        run.mkdir(parents=True)
        summary = {
            "task": "demo",
            "estimator": "none",
            "optimizer": optimizer,
            "seed": seed,
            "status": "ok",
            "steps": 20,
            "final_loss": values[-1],
            "step_time_ms": step_time,
            "optimizer_time_ms": step_time / 2,
            "reference": "none",
        }
        if best_known is not None:
            summary["best_known_objective"] = best_known
        (run / "summary.json").write_text(json.dumps(summary))
        rows = [(10 * index, "objective", value) for index, value in enumerate(values)]
        pd.DataFrame(rows, columns=["step", "metric", "value"]).to_csv(run / "metrics.csv", index=False)


def table_rows(text: str) -> dict[str, list[str]]:
    """The time-to-target table by configuration label (here the optimizer alone, e.g. "fast")."""
    lines = text[text.index("Time to target") :].splitlines()[2:]
    table = lines[2 : lines.index("")]  # below the header and the rule, down to the blank line
    return {
        cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table)
    }


def test_the_default_target_is_a_fraction_of_the_gap_to_the_best_known_value(tmp_path):
    write_runs(tmp_path, best_known=0.0)
    directory = write_report(tmp_path, options=ReportOptions(target_fraction=0.6))
    text = (directory / "report.md").read_text()
    # 60% of the way from the initial objective 1.0 (step 0) to the best known 0.0: objective ≤ 0.4.
    assert "`objective` ≤ 0.4 (60% of the way from the initial objective (1, step 0" in text
    rows = table_rows(text)
    # fast reaches 0.40 at step 20 (both seeds): 20 × 1 ms = 0.02 s; slow crosses 0.4 between step 0 (1.0)
    # and step 10 (0.35 and 0.3): at step 10·0.6/0.65 = 9.23 and 10·0.6/0.7 = 8.57, × 10 ms.
    assert rows["fast"][:2] == ["2/2 reached", "0.02 [0.02, 0.02]"]
    assert rows["slow"][0] == "2/2 reached" and rows["slow"][1].startswith("0.0857 [")
    assert list(rows) == ["fast", "slow"]  # sorted by the median time to target
    assert (directory / "demo_objective_by_time.png").stat().st_size > 10_000
    assert (directory / "demo_time_to_target.png").stat().st_size > 10_000


def test_a_target_from_the_command_line_runs_that_miss_it_and_no_target_at_all(tmp_path, capsys):
    write_runs(tmp_path)
    report = tmp_path / "report" / "report.md"
    assert main([str(tmp_path)]) == 0
    assert "give --target demo=VALUE" in report.read_text()  # no best known value: no table
    assert main([str(tmp_path), "--target", "demo=0.35"]) == 0
    rows = table_rows(report.read_text())
    assert rows["fast"][:2] == ["0/2 reached; 2 censored at 0.02 s", "∞ [∞, ∞]"]  # never at or below 0.35
    assert rows["slow"][0] == "2/2 reached"
    assert main([str(tmp_path), "--target", "demo"]) == 2
    assert "expected TASK=NUMBER" in capsys.readouterr().err
