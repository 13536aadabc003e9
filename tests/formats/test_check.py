"""``python -m bench.check``: a folder of good runs passes; each kind of broken run file is named, one line
per problem, with exit 1; a run folder without ``summary.json`` is incomplete unless
``--allow-incomplete``."""

from __future__ import annotations

import json
import shutil

from bench.cli.check import main
from bench.run.runner import run
from tests.helpers import make_config


def test_good_runs_pass_and_each_broken_file_is_named(tmp_path, capsys):
    good = tmp_path / "sweep" / "good"
    summary = run(make_config("task=toy", "steps=20", "probe.every=10", "probe.draws=4", "threads=1"), good)
    assert summary["status"] == "ok"
    (good / ".hydra").mkdir(exist_ok=True)
    assert main([str(tmp_path / "sweep")]) == 0
    assert "1 run(s) follow the results contract" in capsys.readouterr().out

    broken = {}
    for name in ("truncated", "nan", "missing", "wrong_type", "header", "incomplete"):
        broken[name] = tmp_path / "sweep" / name
        shutil.copytree(good, broken[name])
    text = (good / "summary.json").read_text()
    (broken["truncated"] / "summary.json").write_text(text[: len(text) // 2])
    fields = json.loads(text)
    (broken["nan"] / "summary.json").write_text(json.dumps({**fields, "final_loss": float("nan")}))
    (broken["missing"] / "summary.json").write_text(
        json.dumps({key: value for key, value in fields.items() if key != "wall_time_s"})
    )
    (broken["wrong_type"] / "summary.json").write_text(json.dumps({**fields, "steps": "twenty"}))
    metrics = (good / "metrics.csv").read_text().splitlines()
    (broken["header"] / "metrics.csv").write_text("\n".join(["step,name,value", *metrics[1:]]) + "\n")
    (broken["incomplete"] / "summary.json").unlink()

    assert main([str(tmp_path / "sweep")]) == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 6, lines  # one line per problem, each naming its file
    for name, words in [
        ("truncated", "does not parse"),
        ("nan", "NaN is not strict JSON"),
        ("missing", "wall_time_s"),
        ("wrong_type", "steps"),
        ("header", "header is step,name,value"),
        ("incomplete", "--allow-incomplete"),
    ]:
        assert any(str(broken[name]) in line and words in line for line in lines), (name, lines)
    assert "6 problem(s) in 7 run folder(s)" in captured.err

    # An incomplete run (killed, or still running) is accepted on request; the broken files are not.
    assert main([str(tmp_path / "sweep"), "--allow-incomplete"]) == 1
    assert len(capsys.readouterr().out.strip().splitlines()) == 5


def test_a_folder_without_runs_exits_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err
