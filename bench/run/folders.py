"""No silent overwrite: a run folder that holds another configuration's run is left untouched.

A folder *holds another run* when its ``summary.json`` is an ``ok`` run, or its checkpoints were written by a
run, of another ``config_digest`` (``other_run``). ``bench.run.runner.run`` then raises ``FolderTaken``
before it writes anything, unless ``force=true`` (which replaces that run). ``python -m bench`` exits 2 on it
for a single run; in a sweep (``-m``) the run is skipped, the others run, and the sweep exits 2 at its end
listing every folder it left untouched. A sweep's runs may run in other processes (joblib's workers, SLURM
jobs), so each refusal is a small file in ``<sweep dir>/.refused/``, which ``RefusedFolders`` (a Hydra
callback, ``conf/config.yaml``) clears when the sweep starts and reads when it ends.

How a folder comes to hold another configuration's run: a sweep re-run after a changed default or experiment
file, two configurations whose folder names coincide, a folder named by hand.

Hydra would write its ``.hydra/`` files (the resolved config, which the report labels runs from) into the
folder before any of our code runs, over the other run's; ``conf/config.yaml`` therefore sets
``hydra.output_subdir: null`` and ``python -m bench`` writes the same three files (``save_hydra_files``)
once the folder is known to be this run's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from bench.formats.contract import OK, SUMMARY_FILE
from bench.formats.errors import ConfigError
from bench.formats.files import atomic_write_text

REFUSED_DIR = ".refused"
REFUSED: list[str] = []
"""In the process that ran the sweep, after it ended: one line per folder its runs left untouched."""


class FolderTaken(ConfigError):
    """The run's folder holds another configuration's run (``other_run``); nothing was written there."""


def other_run(directory: Path, config_digest: str) -> str | None:
    """What other run ``directory`` holds (an ``ok`` summary or checkpoints whose ``config_digest`` is not
    ``config_digest``), or None. Unreadable files do not count: they are not a run."""
    from bench.run.checkpoint import CheckpointError, list_checkpoints, read_sidecar  # torch: not at the top

    directory = Path(directory)
    try:
        summary = json.loads((directory / SUMMARY_FILE).read_text())
    except Exception:  # noqa: BLE001 - no summary, or one that is no run's: nothing finished there
        summary = None
    if (
        isinstance(summary, dict)
        and summary.get("status") == OK
        and summary.get("config_digest") != config_digest
    ):
        return (
            f"an ok run of another configuration (config_digest {summary.get('config_digest')}; this run's "
            f"is {config_digest})"
        )
    for path in list_checkpoints(directory):
        try:
            digest = read_sidecar(path).get("config_digest")
        except CheckpointError:
            continue
        if digest != config_digest:
            return (
                f"checkpoints of another configuration ({path.name}: config_digest {digest}; this run's is "
                f"{config_digest})"
            )
    return None


def check_folder(directory: Path, config_digest: str, force: bool) -> None:
    """FolderTaken when ``directory`` holds another run and ``force`` is false."""
    if force:
        return
    found = other_run(directory, config_digest)
    if found is not None:
        raise FolderTaken(
            f"{directory} holds {found}: it is left untouched. Re-run with force=true to replace that run, "
            f"or write this one elsewhere (hydra.run.dir=PATH, hydra.sweep.dir=PATH)."
        )


HYDRA_DIR = ".hydra"


def save_hydra_files(directory: Path, config: DictConfig) -> None:
    """``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` in ``directory``, as Hydra writes them
    (the run's config, Hydra's node, the command line's overrides); inside a run that Hydra started."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.instance().cfg
    folder = Path(directory) / HYDRA_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, node in (("config", config), ("hydra", hydra), ("overrides", hydra.hydra.overrides.task)):
        atomic_write_text(folder / f"{name}.yaml", OmegaConf.to_yaml(node))


def record_refusal(sweep_dir: Path, directory: Path, message: str) -> None:
    """A refused folder of a sweep, for ``RefusedFolders`` to list at the sweep's end."""
    name = hashlib.sha256(str(directory).encode()).hexdigest()[:16] + ".txt"
    atomic_write_text(Path(sweep_dir) / REFUSED_DIR / name, message + "\n")


class RefusedFolders(Callback):
    """Hydra callback: clears ``<sweep dir>/.refused/`` when a sweep starts and reads it into ``REFUSED``
    when it ends (``python -m bench`` then exits 2 listing them)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        REFUSED.clear()
        folder = Path(str(config.hydra.sweep.dir)) / REFUSED_DIR
        for path in folder.glob("*.txt") if folder.is_dir() else ():
            path.unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(str(config.hydra.sweep.dir)) / REFUSED_DIR
        for path in sorted(folder.glob("*.txt")) if folder.is_dir() else ():
            REFUSED.append(path.read_text().strip())
            path.unlink(missing_ok=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
