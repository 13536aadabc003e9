"""The ``gradbench`` console script (``bench.cli.console``): commands, bad words, version, shell completion.

The wheel itself (built, installed into a fresh environment, run from an empty folder) is checked outside the
test suite by ``.ci/wheel``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

import bench
from bench.cli import console
from tests.helpers import ROOT


def test_the_commands_are_the_entry_modules():
    found = console.commands()
    assert found["report"] == "bench.report" and found["tune"] == "bench.tune"
    assert {"check", "perf", "publish", "tune", "report"} <= set(found)
    assert not {"__init__", "__main__", "cli", "run", "formats"} & set(found)


def test_a_command_gets_the_rest_of_the_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        console.main(["check", str(tmp_path / "missing")])
    assert stop.value.code == 2  # bench.check's own refusal: the folder does not exist
    assert "missing is not a folder" in capsys.readouterr().err


def test_a_word_that_is_no_command_exits_2_with_a_hint(capsys):
    with pytest.raises(SystemExit) as stop:
        console.main(["reprot", "results"])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert "'reprot' is neither a command (did you mean report?)" in error


def test_the_version_is_the_package_version(capsys):
    with pytest.raises(SystemExit):
        console.main(["--version"])
    assert capsys.readouterr().out.startswith(f"gradbench {bench.__version__}, ")


def test_the_wheel_ships_every_config():
    # pyproject.toml maps conf/ into the package with the globs *.yaml and */*.yaml: no config may lie deeper.
    package_data = (ROOT / "pyproject.toml").read_text()
    assert '"bench.conf" = ["*.yaml", "*/*.yaml"]' in package_data
    deeper = [
        path for path in (ROOT / "conf").rglob("*.yaml") if len(path.relative_to(ROOT / "conf").parts) > 2
    ]
    assert deeper == []
    assert OmegaConf.load(ROOT / "conf" / "config.yaml").defaults  # the primary config is among them


@pytest.mark.parametrize(
    ("line", "expected", "absent"),
    [
        ("gradbench rep", {"report"}, {"task="}),
        ("gradbench ", {"report", "tune", "task=", "estimator="}, set()),
        ("gradbench -m estimator=rl", {"estimator=rloo"}, {"estimator=gumbel", "report"}),
        ("python -m bench task=to", {"task=toy"}, {"task=vae"}),
        ("python3 -m bench estim", {"estimator="}, set()),
        ("gradbench report res", set(), {"report", "task="}),  # a command's arguments: file names
        ("python script.py estim", set(), {"estimator="}),  # not ours
    ],
)
def test_completion_offers_commands_then_hydras_choices(line, expected, absent):
    offered = set(console.choices(line))
    assert expected <= offered and not absent & offered, offered


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_bash_script_completes_in_bash():
    script = subprocess.run(
        [sys.executable, "-m", "bench", "completion", "bash"], capture_output=True, text=True, check=True
    ).stdout
    probe = (
        script
        + 'COMP_LINE="gradbench -m task=to"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=(gradbench -m task=to); '
        + 'COMP_CWORD=2; _gradbench_complete; echo "gradbench: ${COMPREPLY[*]}"\n'
        + f'COMP_LINE="{sys.executable} -m bench tu"; COMP_POINT=${{#COMP_LINE}}; '
        + f"COMP_WORDS=({sys.executable} -m bench tu); COMP_CWORD=3; _gradbench_python; "
        + 'echo "python: ${COMPREPLY[*]}"\n'
    )
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "gradbench: task=toy" in result.stdout, result
    assert "python: tune" in result.stdout, result
