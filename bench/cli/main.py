"""``python -m bench``: one run, or a sweep with ``-m``. See README.md and ``conf/config.yaml``."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bench.formats.configs import CONF_DIR
from bench.formats.contract import FAILED
from bench.formats.errors import ConfigError
from bench.run import folders, sweep
from bench.run.folders import FolderTaken, check_folder, record_refusal, save_hydra_files
from bench.run.preflight import preflight
from bench.run.sweep import (
    allocation_threads,
    config_digest,
    finished_elsewhere,
    finished_summary,
    launcher_threads,
    register_resolver,
    remove_if_fresh,
    sweep_progress,
)

register_resolver()  # ${run_folder:...}, the sweep's run folders (conf/config.yaml), before Hydra composes
STARTED = False  # set when Hydra hands a configuration to main(): a run (of the sweep) has started


def fail(message: str, code: int = 2) -> None:
    # Never break inside a word or at a hyphen: paths and overrides in the message must stay copyable.
    text = textwrap.fill(f"error: {message}", width=100, break_long_words=False, break_on_hyphens=False)
    print("\n" + text, file=sys.stderr)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(config: DictConfig) -> None:
    global STARTED
    STARTED = True
    # Imported here, not at the top: under a parallel launcher (joblib) the process that only dispatches the
    # jobs then never imports torch (~2 s of a sweep's wall time on 2 cores; python -m bench.perf).
    from bench.campaigns.same_point import run
    from bench.run.runner import describe

    hydra_config = HydraConfig.get()
    directory = Path(hydra_config.runtime.output_dir)
    multirun = hydra_config.mode == RunMode.MULTIRUN
    if multirun:
        print(sweep_progress(hydra_config.job.num, directory.name), file=sys.stderr, flush=True)
    done = None if config.force else finished_summary(directory, config)
    if done is not None:  # resuming a sweep: this run already finished (force=true runs it again)
        print(
            f"[done] {directory}: it holds an ok run of this config; skipped (force=true re-runs it)",
            file=sys.stderr,
        )
        return
    elsewhere = (
        None
        if config.force or not multirun
        else finished_elsewhere(directory, config, hydra_config.job.override_dirname)
    )
    if elsewhere is not None:  # finished in a folder named by other varying keys, or the old way
        remove_if_fresh(directory)
        print(
            f"[done] {elsewhere}: it holds an ok run of this config; skipped (force=true re-runs it)",
            file=sys.stderr,
        )
        return
    try:  # another configuration's run is left untouched (bench.run.folders); nothing written there yet
        check_folder(directory, config_digest(config), bool(config.force))
    except FolderTaken as error:
        if not multirun:
            fail(str(error))
        print(f"[skipped] {directory.name}: {error}", file=sys.stderr)
        record_refusal(Path(hydra_config.sweep.dir), directory, str(error))  # listed when the sweep ends
        return
    save_hydra_files(directory, config)  # what Hydra would have written first (hydra.output_subdir: null)
    if config.threads is None:  # threads=N wins; else joblib's share of the cores, or the SLURM job's CPUs
        shared = launcher_threads(hydra_config.launcher) if multirun else None
        config.threads = shared or allocation_threads()
    try:
        summary = run(config, directory)
    except ConfigError as error:
        if multirun:  # a sweep records the run as failed/skipped and goes on
            print(f"[{error.status}] {directory.name}: {error}", file=sys.stderr)
            if isinstance(error, FolderTaken):  # listed when the sweep ends, which then exits 2
                record_refusal(Path(hydra_config.sweep.dir), directory, str(error))
            return
        fail(str(error))
    except KeyboardInterrupt:
        fail(
            f"interrupted; the run was recorded as interrupted in {directory} (with a checkpoint: re-running "
            f"the same command into that folder resumes it)",
            code=130,
        )
    except OSError as error:  # the results folder became unwritable (full disk, removed, permissions)
        fail(f"cannot write the results into {directory}: {error}")
    print(describe(summary, directory), file=sys.stderr if multirun else sys.stdout)
    if summary["status"] == FAILED and not multirun:
        fail(f"the run failed: {summary['error']} (traceback in {directory / 'error.log'})", code=1)


def entry(arguments: list[str]) -> None:
    """Check the command line (bench.run.preflight), then let Hydra run; every refusal exits 2."""
    try:
        preflight(arguments)
    except ConfigError as error:
        fail(str(error))
    try:
        main()
        if folders.REFUSED:  # a sweep that left folders of other runs untouched (bench.run.folders)
            fail(
                f"{len(folders.REFUSED)} run folder(s) of this sweep hold another configuration's run and "
                f"were left untouched (the other runs ran): " + " ".join(folders.REFUSED)
            )
    except SystemExit as stop:
        # Hydra exits 1 (its message printed above) when it refuses the configuration before any run
        # started, e.g. a key that does not exist (estimator.tauu=1): bad input, so exit 2. A sweep whose
        # runs had started (in this process, or launched to joblib's workers) failed otherwise: exit 1.
        if stop.code == 1 and not STARTED and not sweep.LAUNCHED:
            sys.exit(2)
        raise
    except KeyboardInterrupt:  # outside a run (composing the config, between runs): no run was cut short
        fail("interrupted" + ("" if STARTED else " before the run started; nothing was written"), code=130)
