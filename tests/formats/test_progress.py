"""Progress of long work (``bench.formats.progress``): ``k of N`` lines with the time left, throttled, and the
report's reading of runs announced with them."""

from __future__ import annotations

import io
import json

from bench.formats.progress import Progress, duration, time_left


def test_lines_count_the_items_and_estimate_the_time_left():
    now = [0.0]
    stream = io.StringIO()
    progress = Progress("[report]", "reading runs", 10, every_s=5, stream=stream, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 2.0  # every item takes 2 s
        progress.advance()
    lines = stream.getvalue().splitlines()
    # The first item, then one line per 5 s at most (items 4, 7 and 10: 8 s, 14 s, 20 s), and the last.
    assert lines[0] == "[report] reading runs: 1 of 10 (2 s; about 18 s left)"
    assert lines[1] == "[report] reading runs: 4 of 10 (8 s; about 12 s left)"
    assert lines[-1] == "[report] reading runs: 10 of 10 (20 s)"
    assert len(lines) == 4


def test_durations_and_time_left():
    assert [duration(s) for s in (0.4, 45, 200, 7500)] == ["0 s", "45 s", "3 min 20 s", "2 h 5 min"]
    assert time_left(30.0, 3, 8) == 50.0 and time_left(0.0, 0, 8) is None


def test_the_report_announces_its_reading_of_the_runs(tmp_path, capsys):
    from bench.report.read import load_runs

    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(
            json.dumps({"task": "toy", "estimator": name, "optimizer": "adam", "status": "ok"})
        )
    load_runs(tmp_path)
    error = capsys.readouterr().err
    assert f"[report] reading the runs below {tmp_path}: 1 of 3" in error
    assert f"[report] reading the runs below {tmp_path}: 3 of 3" in error
