"""``python -m bench``: one run, or a sweep with ``-m``. See README.md and ``conf/config.yaml``."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from bench.errors import ConfigError
from bench.runner import describe, run
from bench.sweep import finished_summary, launcher_threads


def fail(message: str, code: int = 2) -> None:
    print("\n" + textwrap.fill(f"error: {message}", width=100), file=sys.stderr)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(config: DictConfig) -> None:
    hydra_config = HydraConfig.get()
    directory = Path(hydra_config.runtime.output_dir)
    multirun = hydra_config.mode == RunMode.MULTIRUN
    done = None if config.force else finished_summary(directory)
    if done is not None:  # resuming a sweep: this run already finished (force=true runs it again)
        print(f"[done] {directory}: summary.json says ok; skipped (force=true re-runs it)", file=sys.stderr)
        return
    if config.threads is None and multirun:
        config.threads = launcher_threads(hydra_config.launcher)
    try:
        summary = run(config, directory)
    except ConfigError as error:
        if multirun:  # a sweep records the run as failed/skipped and goes on
            print(f"[{error.status}] {directory.name}: {error}", file=sys.stderr)
            return
        fail(str(error))
    except KeyboardInterrupt:
        fail(f"interrupted; the run was recorded as failed in {directory}", code=130)
    print(describe(summary, directory), file=sys.stderr if multirun else sys.stdout)
    if summary["status"] == "failed" and not multirun:
        fail(f"the run failed: {summary['error']} (traceback in {directory / 'error.log'})", code=1)


if __name__ == "__main__":
    main()
