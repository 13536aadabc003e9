"""``python -m bench.tune``: the two-stage tuning protocol of ``bench.campaigns.tuning`` on the command
line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.campaigns.tuning import (
    NOT_FINISHED,
    TUNING_FILE,
    Sweep,
    choice_lines,
    choose,
    load_tuning,
    plan_from_command_line,
    run_identity,
    stage_one_outcomes,
    write_tuning,
)
from bench.campaigns.tuning.command_line import CommandLineTuning, seed_list
from bench.formats.contract import OK, SUMMARY_FILE
from bench.formats.errors import ConfigError

# ---- Running -------------------------------------------------------------------------------------------


def run_sweep(sweep: Sweep) -> int:
    """Run one multirun of ``python -m bench`` in this process (its imports are paid once); its exit code.

    Hydra's global state is cleared before and after.
    """
    from hydra.core.global_hydra import GlobalHydra

    from bench.cli import main as bench_main
    from bench.run import sweep as sweeps

    print(f"[tune] {sweep.command()}", file=sys.stderr, flush=True)
    saved = sys.argv
    GlobalHydra.instance().clear()
    sweeps.LAUNCHED = False
    bench_main.STARTED = False
    sys.argv = ["bench", *sweep.arguments()]
    try:
        bench_main.entry(sweep.arguments())
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()
    return 0


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(
        prog="python -m bench.tune",
        description="Tune every optimizer of a study by the same rule (stage 1), write tuning.json, and "
        "rerun the chosen settings with fresh seeds (stage 2). Then: python -m bench.report ROOT. The study "
        "is an experiment's tuning node, or the --optimizers and --grid given here (for any task).",
        epilog="Examples: python -m bench.tune +experiment=optimizers_toy_tuned; python -m bench.tune "
        "task=custom task.factory=my_task:make_task --optimizers adam,lookahead "
        "--grid optimizer.lr=1e-4:1e-1:7",
    )
    result.add_argument("overrides", nargs="*", help="Hydra overrides: +experiment=NAME and any KEY=VALUE")
    result.add_argument(
        "--stage",
        choices=("1", "2", "heldout", "both"),
        default="both",
        help="1: the grid and tuning.json; 2: the chosen settings from tuning.json; heldout: the chosen "
        "settings on the study's held-out variant (tuning.heldout); both (default): 1, 2 and heldout",
    )
    result.add_argument(
        "--optimizers", default="", metavar="A,B", help="the optimizer options to tune (conf/optimizer)"
    )
    result.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="[OPTION:]optimizer.KEY=VALUES",
        help="an axis of the grid: LOW:HIGH:N (N log-spaced values) or a comma list; repeatable",
    )
    result.add_argument("--seeds", default=None, metavar="0,1", help="stage 1's seeds (default 0,1)")
    result.add_argument(
        "--final-seeds", default=None, metavar="100,...", help="stage 2's seeds (default 100,...,104)"
    )
    result.add_argument("--metric", default=None, help="stage 1's score (default validation_objective)")
    result.add_argument("--dry-run", action="store_true", help="print the sweeps' commands, run nothing")
    return result


def failures(root: Path, folders: list[str | None], statuses: list[str]) -> list[str]:
    """One line per run that did not end ``ok``: its status, folder and error (from its summary.json)."""
    lines = []
    for folder, status in zip(folders, statuses, strict=True):
        if status == OK:
            continue
        error = ""
        if folder is not None:
            try:
                error = str(json.loads((root / folder / SUMMARY_FILE).read_text()).get("error") or "")
            except (OSError, ValueError, AttributeError):
                error = ""
        lines.append(f"  [{status}] {folder or '(no folder)'}{': ' + error if error else ''}")
    return lines


def stage_two_outcomes(root: Path, sweeps: list) -> tuple[list[str | None], list[str]]:
    """The folders and statuses of every stage-2 run found below the sweeps' folders."""
    folders: list[str | None] = []
    statuses: list[str] = []
    for sweep in sweeps:
        for path in sorted(Path(sweep.folder).glob(f"*/{SUMMARY_FILE}")):
            try:
                status = str(json.loads(path.read_text()).get("status"))
            except (OSError, ValueError, AttributeError):
                status = "unreadable"
            folders.append(
                str(path.parent.relative_to(root)) if path.is_relative_to(root) else str(path.parent)
            )
            statuses.append(status)
    return folders, statuses


def every_run_failed(stage: str, root: Path, folders: list[str | None], statuses: list[str]) -> int:
    """Exit code 1 with the list of failures when no run of a stage ended ``ok``, else 0."""
    if not statuses or any(status == OK for status in statuses):
        return 0
    lines = failures(root, folders, statuses)
    shown = lines[:20] + ([f"  ... and {len(lines) - 20} more"] if len(lines) > 20 else [])
    print(
        f"error: every {stage} run failed ({len(lines)} runs); nothing was tuned. The failures:\n"
        + "\n".join(shown),
        file=sys.stderr,
    )
    return 1


def command_line_tuning(arguments: argparse.Namespace) -> CommandLineTuning:
    return CommandLineTuning(
        optimizers=[item for item in arguments.optimizers.split(",") if item],
        grids=list(arguments.grid),
        seeds=None if arguments.seeds is None else seed_list(arguments.seeds, "--seeds"),
        final_seeds=None
        if arguments.final_seeds is None
        else seed_list(arguments.final_seeds, "--final-seeds"),
        metric=arguments.metric,
    )


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_intermixed_args(argv)
    try:
        study = plan_from_command_line(arguments.overrides, command_line_tuning(arguments))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    root = study.root
    if arguments.dry_run:
        if arguments.stage in ("1", "both"):
            print(f"# stage 1: {sum(len(study.points(option)) for option in study.spec.grids)} runs")
            print("\n".join(sweep.command() for sweep in study.stage_one()))
        if arguments.stage == "2" or (root / TUNING_FILE).exists():
            try:
                document = load_tuning(root)
            except ConfigError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            print("# stage 2, from " + str(root / TUNING_FILE))
            print("\n".join(sweep.command() for sweep in study.stage_two(document)))
            if study.spec.heldout:
                print("# held-out variant: " + " ".join(f"{k}={v}" for k, v in study.spec.heldout.items()))
                print("\n".join(sweep.command() for sweep in study.stage_two(document, heldout=True)))
        return 0
    if arguments.stage in ("1", "both"):
        sweeps = study.stage_one()
        for number, sweep in enumerate(sweeps, 1):
            runs = len(study.points(sweep.folder.name))
            print(
                f"[tune] stage 1, sweep {number} of {len(sweeps)}: {sweep.folder.name}, {runs} runs",
                file=sys.stderr,
            )
            code = run_sweep(sweep)
            if code:
                return code
        outcomes = stage_one_outcomes(study)
        found = list(outcomes.values())
        code = every_run_failed(
            "stage-1", root, [item.folder for item in found], [item.status for item in found]
        )
        if code:
            return code
        unfinished = [point for point, found in outcomes.items() if found.status in NOT_FINISHED]
        if unfinished:
            shown = "; ".join(
                " ".join(study.point_overrides(point)[len(study.base) :]) for point in unfinished[:5]
            )
            more = " ..." if len(unfinished) > 5 else ""
            print(
                f"error: {len(unfinished)} stage-1 runs did not finish ({shown}{more}); run the same command "
                "again to resume them.",
                file=sys.stderr,
            )
            return 1
        document = choose(study, outcomes)
        path = write_tuning(root, document)
        print(f"[tune] stage 1 done: {path}\n" + "\n".join(choice_lines(document)), file=sys.stderr)
    if arguments.stage in ("2", "heldout", "both"):
        try:
            document = load_tuning(root)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if run_identity(document.get("overrides") or []) != run_identity(study.base):
            print(
                f"error: {root / TUNING_FILE} tuned the runs of {' '.join(document.get('overrides') or [])}, "
                f"not of {' '.join(study.base)}: run stage 1 with these overrides first.",
                file=sys.stderr,
            )
            return 2
        sweeps = [] if arguments.stage == "heldout" else study.stage_two(document)
        if arguments.stage in ("heldout", "both"):
            sweeps += study.stage_two(document, heldout=True)  # none without tuning.heldout
        for number, sweep in enumerate(sweeps, 1):
            print(f"[tune] stage 2, sweep {number} of {len(sweeps)}: {sweep.folder}", file=sys.stderr)
            code = run_sweep(sweep)
            if code:
                return code
        code = every_run_failed("stage-2", root, *stage_two_outcomes(root, sweeps))
        if code:
            return code
        skipped = [choice["name"] for choice in document["choices"] if choice["chosen"] is None]
        if skipped:
            print(f"[tune] not rerun (every setting scored +inf): {', '.join(skipped)}", file=sys.stderr)
        print(f"[tune] stage 2 done; report: python -m bench.report {root}", file=sys.stderr)
    return 0
