"""The report's optimizer views: objective by training time and the time-to-target table, on known runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.report import main, write_report

# Two configurations, two seeds each; objective measured at steps 0, 10, 20 (step × step time = time).
RUNS = {
    ("fast", 0): (1.0, [1.0, 0.8, 0.40]),  # step_time_ms, objective by step
    ("fast", 1): (1.0, [1.0, 0.7, 0.40]),
    ("slow", 0): (10.0, [1.0, 0.35, 0.20]),
    ("slow", 1): (10.0, [1.0, 0.3, 0.20]),
}


def write_runs(root: Path) -> None:
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


def test_time_to_target_uses_the_best_common_level_and_step_times(tmp_path):
    write_runs(tmp_path)
    directory = write_report(tmp_path)
    text = (directory / "report.md").read_text()
    # Default target: the lowest point of fast's mean curve (1.0, 0.75, 0.40), above slow's (0.20).
    assert "objective ≤ **0.4**" in text
    rows = table_rows(text)
    # fast reaches 0.40 at step 20 (both seeds): 20 × 1 ms = 0.02 s; slow at step 10: 10 × 10 ms = 0.1 s.
    assert rows["fast"][:3] == ["2/2", "20 ± 0", "0.02 ± 0"]
    assert rows["slow"][:3] == ["2/2", "10 ± 0", "0.1 ± 0"]
    assert list(rows) == ["fast", "slow"]  # sorted by time to target
    figure = directory / "demo_objective_by_time.png"
    assert figure.stat().st_size > 10_000


def test_a_target_from_the_command_line_and_runs_that_miss_it(tmp_path, capsys):
    write_runs(tmp_path)
    assert main([str(tmp_path), "--target", "demo=0.35"]) == 0
    rows = table_rows((tmp_path / "report" / "report.md").read_text())
    assert rows["fast"][:3] == ["0/2", "—", "—"]  # never at or below 0.35
    assert rows["slow"][0] == "2/2"
    assert main([str(tmp_path), "--target", "demo"]) == 2
    assert "expected TASK=NUMBER" in capsys.readouterr().err
