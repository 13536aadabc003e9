"""Where the Hydra configs are, and the one way the tools compose them.

The configs live in ``conf/`` at the top of the repository; a built wheel ships the same files inside the
package (``bench/conf``). ``conf_dir()`` finds them, ``compose(overrides)`` gives the config ``python -m
bench`` would build from those command-line overrides, ``options(group)`` lists a group's choices and
``config_target`` reads the class a group config names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent.parent


def conf_dir() -> Path:
    """The folder of the Hydra configs: the repository's ``conf/`` beside the package, else the copy shipped
    inside an installed package."""
    for candidate in (PACKAGE.parent / "conf", PACKAGE / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"the benchmark's configs are missing: neither {PACKAGE.parent / 'conf'} nor {PACKAGE / 'conf'} "
        "holds config.yaml; reinstall the package (pip install gradbench, or pip install -e . in a checkout)"
    )


CONF_DIR = conf_dir()


def options(group: str) -> list[str]:
    """The option names of a config group: the YAML files in ``conf/<group>/``."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def groups() -> list[str]:
    """The config groups: the folders of ``conf/``."""
    return sorted(path.name for path in CONF_DIR.iterdir() if path.is_dir())


def compose(overrides: list[str] | tuple[str, ...] = (), hydra: bool = False) -> Any:
    """The config ``python -m bench`` composes from these command-line overrides (with Hydra's own node when
    ``hydra``). Hydra's errors propagate; callers turn them into their own messages."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # e.g. inside a run that Hydra started
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def config_target(path: Path) -> str | None:
    """The ``_target_`` of a group config file, following presets that extend another file of the group."""
    from omegaconf import OmegaConf

    node = OmegaConf.load(path)
    if "_target_" in node:
        return node._target_
    for parent in node.get("defaults", []):
        if isinstance(parent, str) and parent != "_self_" and (path.parent / f"{parent}.yaml").exists():
            return config_target(path.parent / f"{parent}.yaml")
    return None
