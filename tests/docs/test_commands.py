"""Every shell command of the README and docs/ is at least composed, and the README's commands run.

- ``python -m bench ...``: checked as ``python -m bench`` checks a command line before it runs
  (``bench.run.preflight``: override syntax, group names, a comma list without ``-m``), then composed by
  Hydra in this process (``bench.formats.configs.compose``, as ``--cfg job`` would), Hydra's own node
  included (launchers, sweep folders). A sweep is composed once per option of its longest swept config
  group, so that every option it names is composed once.
- ``python -m bench.<command> ...`` and ``python scripts/<script>.py ...``: the command's ``--help`` is read,
  and every option the documented command uses must be one it has; Hydra overrides given to
  ``python -m bench.tune``, ``python -m bench.recommend`` (its ``recommend.*`` settings parsed apart) or
  ``python -m bench.check unbiasedness`` are checked and composed as well.
- ``gradbench ...``: as the ``python -m bench...`` command the console script runs.
- ``pip``, ``pytest`` and ``scripts/*.sh``: the extra, the test files and markers, the script exist.
- The README's commands run as written, in this process (as Hydra allows), with fewer steps and one thread
  (``steps=20 probe.every=10 probe.draws=16 threads=1``) into a temporary folder: one run, a sweep, its
  report, ``--help``, the README's own-task run with the user guide's ``my_task.py``, and the check of
  them all.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import runpy
import sys
import time
from pathlib import Path

import pytest
import tomllib
import torch
from hydra._internal.utils import get_args_parser
from hydra.errors import HydraException

from bench.formats.configs import compose, groups
from bench.formats.errors import ConfigError
from bench.run.preflight import check_names, parse
from tests.docs.pages import PAGES, Command, all_blocks, blocks, shell_commands, split_commands
from tests.helpers import ROOT

COMMANDS = shell_commands()
GROUPS = set(groups())
FEWER_STEPS = ("steps=20", "probe.every=10", "probe.draws=16")


@pytest.fixture(scope="module")
def config_dirs(tmp_path_factory) -> Path:
    """A folder holding every YAML block of the docs at the path its paragraph names (``my_conf/...``)."""
    folder = tmp_path_factory.mktemp("configs")
    for block in all_blocks("yaml"):
        text = block.page.read_text().splitlines()
        paragraph = "\n".join(text[max(0, block.line - 4) : block.line - 1])
        named = re.findall(r"`([\w/.-]+\.yaml)`", paragraph)
        assert named, f"{block.name}: say which file this YAML block is, in the sentence before it"
        (folder / named[-1]).parent.mkdir(parents=True, exist_ok=True)
        (folder / named[-1]).write_text(block.code)
    return folder


def sweep_rounds(arguments: list[str]) -> list[list[str]]:
    """The overrides of a sweep as single runs: round i gives every swept config group (``estimator=a,b``)
    its i-th value, cycling, so that each option is composed once; other swept keys (seeds, learning rates)
    take their first value, their syntax being checked by the parser."""
    parsed = parse(arguments)
    values = [list(o.sweep_string_iterator()) if o.is_sweep_override() else None for o in parsed]
    rounds = max(
        (len(v) for o, v in zip(parsed, values, strict=True) if v and o.key_or_group in GROUPS), default=1
    )
    return [
        [
            f"{o.get_key_element()}={v[i % len(v) if o.key_or_group in GROUPS else 0]}" if v else o.input_line
            for o, v in zip(parsed, values, strict=True)
        ]
        for i in range(rounds)
    ]


def compose_bench(words: list[str], config_dirs: Path) -> int:
    """Check and compose a ``python -m bench`` command line; the number of configs composed."""
    arguments, unknown = get_args_parser().parse_known_args(words)
    assert not unknown, f"options python -m bench does not have: {unknown}"
    if arguments.help or arguments.hydra_help:
        return 0
    overrides = list(arguments.overrides)
    if arguments.config_dir:
        folder = config_dirs / arguments.config_dir
        assert folder.is_dir(), f"--config-dir {arguments.config_dir}: no YAML block of the docs is in it"
        overrides.append(f"hydra.searchpath=[file://{folder}]")
    else:
        check_names(parse(overrides), bool(arguments.multirun))
    rounds = sweep_rounds(overrides) if arguments.multirun else [overrides]
    for single in rounds:
        compose(single, hydra=True)
    return len(rounds)


def help_text(module: str, prefix: list[str]) -> str:
    """``python -m <module> <prefix> --help``, read in this process."""
    name = module.removeprefix("bench.")
    cli = importlib.util.find_spec(f"bench.cli.{name}") if "." not in name else None
    main = importlib.import_module(f"bench.cli.{name}" if cli else module).main
    output = io.StringIO()
    try:
        with contextlib.redirect_stdout(output):
            code = main([*prefix, "--help"])  # argparse exits; a hand-written usage may return
    except SystemExit as stop:
        code = stop.code
    assert code in (0, None), f"python -m {module} --help exited {code}"
    return output.getvalue()


def script_help(path: Path) -> str:
    output, argv = io.StringIO(), sys.argv
    sys.argv = [str(path), "--help"]
    try:
        with contextlib.redirect_stdout(output), pytest.raises(SystemExit) as stop:
            runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = argv
    assert stop.value.code in (0, None), f"{path.name} --help exited {stop.value.code}"
    return output.getvalue()


def options_known(words: list[str], help_output: str) -> None:
    unknown = [word for word in words if word.startswith("--") and word.split("=")[0] not in help_output]
    assert not unknown, f"options its --help does not list: {unknown}"


CHECKED: set[tuple[str, ...]] = set()


def check_command(command: Command, config_dirs: Path) -> None:
    if command.words in CHECKED:  # the same command on another page
        return
    _check(command, config_dirs)
    CHECKED.add(command.words)


def _check(command: Command, config_dirs: Path) -> None:
    words = list(command.words)
    if words[0] == "sudo":
        words = words[1:]
    if words[0] == "gradbench":  # the console script: a command's name, else python -m bench's overrides
        from bench.cli.console import commands

        module = commands().get(words[1], "bench") if len(words) > 1 else "bench"
        words = ["python", "-m", module, *words[1 + (module != "bench") :]]
    if words[:2] == ["python", "-m"] and words[2] == "bench":
        compose_bench(words[3:], config_dirs)
    elif words[:2] == ["python", "-m"]:
        module, rest = words[2], words[3:]
        prefix = rest[:1] if module == "bench.check" and rest[:1] == ["unbiasedness"] else []
        options_known(rest, help_text(module, prefix))
        overrides = [word for word in rest[len(prefix) :] if "=" in word and not word.startswith("-")]
        if module == "bench.recommend":  # its own recommend.* settings apart, the overrides of the runs
            from bench.campaigns.recommend import parse as settings
            from bench.campaigns.recommend import split_overrides

            own, overrides = split_overrides(overrides)
            settings(own)
        if module in ("bench.tune", "bench.recommend") or prefix:
            check_names(parse(overrides), multirun=module == "bench.tune")
            compose(overrides, hydra=True)
    elif words[0] == "python" and words[1].startswith("scripts/"):
        options_known(words[2:], script_help(ROOT / words[1]))
    elif words[0] == "pip":
        extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
        for extra in re.findall(r"\.\[(\w+)\]", " ".join(words)):
            assert extra in extras, f"pyproject.toml has no extra '{extra}'"
    elif words[0] == "pytest":
        markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
        for index, word in enumerate(words[1:], start=1):
            if words[index - 1] == "-m":
                assert any(line.startswith(f"{word}:") for line in markers["markers"]), f"no marker {word}"
            elif not word.startswith("-"):
                assert (ROOT / word).exists(), f"{word} does not exist"
    elif words[0].startswith("scripts/"):
        assert os.access(ROOT / words[0], os.X_OK), f"{words[0]} is not an executable script"
    else:
        pytest.fail(f"a command this test does not know how to check: {command.text}")


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: f"{command.where} {command.text[:60]}")
def test_every_command_is_composed(command, config_dirs):
    check_command(command, config_dirs)


def test_the_commands_are_found():
    # Every page with a bash block gives commands, and the README's set-up command is among them.
    texts = {command.text for command in COMMANDS}
    assert "pip install -e .[dev]" in texts and "python -m bench" in texts and "pytest" in texts
    assert len(COMMANDS) > 40, len(COMMANDS)


@pytest.mark.parametrize(
    "words",
    [
        "python -m bench estimator=no_such_estimator",
        "python -m bench estimator=rloo,st",  # a comma list without -m
        "python -m bench -m task=toy estimator=rloo,no_such_estimator",  # the second value of a sweep
        "python -m bench task.no_such_key=1",
        "python -m bench.report results --no-such-option",
        "python -m bench.tune +experiment=no_such_study",
        "python scripts/relax_toy.py --no-such-option",
        "pytest tests/no_such_test.py",
    ],
)
def test_a_wrong_command_is_caught(words, config_dirs):
    # Negative controls: each of these is wrong, and the check says so.
    with pytest.raises((AssertionError, ConfigError, HydraException)):
        check_command(Command("negative control", tuple(words.split())), config_dirs)


def readme_commands() -> list[list[str]]:
    readme = blocks(ROOT / "README.md")
    five = next(block for block in readme if block.heading == "The five commands")
    own = next(b for b in readme if b.heading == "Bring your own task" and b.language == "bash")
    return [*split_commands(five.code), split_commands(own.code)[0]]


def run_here(words: list[str], cwd: Path) -> str:
    """``python -m <module> ARGS`` in this process, in ``cwd``; its standard output (exit code 0 required).

    ``python -m bench`` is Hydra's application: it reads ``sys.argv``, which is set for the call."""
    assert words[:2] == ["python", "-m"], words
    module, arguments = words[2], words[3:]
    if module == "bench":
        from bench.cli.main import entry as main
    else:
        main = importlib.import_module(f"bench.cli.{module.removeprefix('bench.')}").main
    output, argv, threads, path = io.StringIO(), sys.argv, torch.get_num_threads(), list(sys.path)
    sys.argv = [f"python -m {module}", *arguments]
    sys.path.insert(0, str(cwd))  # as python -m puts the current folder first
    started = time.process_time()
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(output):
            code = main(arguments)
    except SystemExit as stop:
        code = stop.code
    finally:
        sys.argv, sys.path[:] = argv, path
        torch.set_num_threads(threads)
        print(f"{time.process_time() - started:.1f} s CPU: {' '.join(words)}", file=sys.stderr)
    assert code in (0, None), f"{' '.join(words)} exited {code}:\n{output.getvalue()[-3000:]}"
    return output.getvalue()


@pytest.mark.slow
def test_the_readme_commands_run(tmp_path, monkeypatch):
    one_run, sweep, report, check, help_, own_task = readme_commands()
    assert one_run[:3] == ["python", "-m", "bench"] and sweep[3] == "-m" and report[2] == "bench.report"
    assert check[2] == "bench.check" and check[3] == "results/" and help_[3] == "--help"
    assert "task=custom" in own_task
    guide = blocks(ROOT / "docs" / "guide.md")
    my_task = next(b for b in guide if b.heading == "Bring your own task" and b.language == "python")
    (tmp_path / "my_task.py").write_text(my_task.code)
    monkeypatch.delitem(sys.modules, "my_task", raising=False)
    # Each as written, in this process, with fewer steps and one thread, into tmp_path/results.
    fewer = [*FEWER_STEPS, "threads=1", "progress=false"]
    output = run_here([*one_run, *fewer, "hydra.run.dir=results/runs/one"], tmp_path)
    assert "toy / rloo / adam  seed=0  status=ok" in output
    run_here([*sweep, *fewer, "hydra.sweep.dir=results/sweeps/quick"], tmp_path)
    run_here([arg.replace("<time>", "quick") for arg in report], tmp_path)
    report_text = (tmp_path / "results/sweeps/quick/report/report.md").read_text()
    assert all(name in report_text for name in ("score_function", "rloo", "gumbel_st", "exact"))
    # The quick start's report concludes first, says which differences its intervals support (a difference
    # is named only with an interval that excludes zero), and flags that rloo runs at S = 2, the others at 1.
    section = report_text[report_text.index("## Task `toy`") :]
    assert section.split("\n\n")[1].startswith("**Conclusions.** Best final objective")
    assert "not significantly different from it" in section or "Significantly worse" in section
    assert "unequal cost: evaluations of f per estimate range from 1" in section and "only 2 seeds" in section
    for low, high in re.findall(r"\(\+[0-9.e-]+ \[([0-9.e+-]+), ([0-9.e+-]+)\]\)", section):
        assert float(low) > 0 and float(high) > 0
    assert "experiment" in run_here(help_, tmp_path)
    # The own-task run: DisARM is unbiased, and 400 draws test it against the task's exact gradient.
    gates = [*own_task, "steps=30", "probe.draws=400", "threads=1", "hydra.run.dir=results/runs/gates"]
    output = run_here(gates, tmp_path)
    assert "feature_gates / disarm / adam" in output
    summary = json.loads((tmp_path / "results/runs/gates/summary.json").read_text())
    assert summary["status"] == "ok" and summary["reference"] == "exact"
    # The probe's mean is off by about one standard error; 4 SE is the tolerance (fixed seed, 400 draws).
    assert summary["grad_bias"] < 4 * summary["grad_bias_se"], summary
    assert "14 run(s) follow the results contract" in run_here(check, tmp_path)  # one, 12, gates


def test_every_page_is_read():
    assert {page.name for page in PAGES} >= {"README.md", "guide.md", "reference.md", "design.md"}
