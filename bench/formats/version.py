"""The code version of a run, and its provenance (versions of Python and the libraries, the machine).

``code_version()`` says which code computed something: the package version (``bench.__version__``); in a git
checkout, the commit and whether the tree was modified (an installed package, even one in a virtual
environment inside a checkout, has neither); and always ``source_hash``, the sha256 of the installed source
(every ``.py`` file of ``bench``, ``estimators`` and ``optim``, and every config ``.yaml``, by path and
content), so that two runs of the same commit with different uncommitted edits, or of an installed wheel, are
told apart.
It is recorded in every ``summary.json`` (``provenance``) and in every checkpoint (a resume after a change of
code is noticed). The hash is computed once per process.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent.parent  # bench/
SOURCE_PACKAGES = ("bench", "estimators", "optim")


def package_version() -> str:
    """The package's version, ``bench.__version__`` (the wheel's version is read from it)."""
    import bench

    return str(getattr(bench, "__version__", "unknown"))


def git(*arguments: str) -> str | None:
    """A git command's output in the checkout that holds this package; None outside one or on any failure."""
    try:
        result = subprocess.run(
            ["git", *arguments], cwd=PACKAGE.parent, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the git checkout this package is part of (None for an installed package: a virtual
    environment inside a checkout is not part of it)."""
    top = git("rev-parse", "--show-toplevel")
    if top is None or not top.strip() or Path(top.strip()).resolve() != PACKAGE.parent.resolve():
        return None
    output = git("rev-parse", "HEAD")
    return output.strip() or None if output is not None else None


def git_modified() -> bool | None:
    """Whether tracked files of the checkout differ from its commit (None outside a git checkout)."""
    if git_commit() is None:
        return None
    output = git("status", "--porcelain", "--untracked-files=no")
    return None if output is None else bool(output.strip())


def source_files() -> list[Path]:
    """The files whose content is the code: the packages' ``.py`` files and the configs' ``.yaml`` files."""
    root = PACKAGE.parent
    files = [path for name in SOURCE_PACKAGES for path in (root / name).rglob("*.py")]
    from bench.formats.configs import CONF_DIR

    files += list(CONF_DIR.rglob("*.yaml"))
    return sorted(path for path in files if "__pycache__" not in path.parts)


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """sha256 (16 hex digits) of the source files' relative paths and contents. The configs count as
    ``conf/...`` wherever they are (the repository's ``conf/`` or the wheel's ``bench/conf/``), so a wheel
    built from a clean checkout has the checkout's hash."""
    from bench.formats.configs import CONF_DIR

    digest = hashlib.sha256()
    root = PACKAGE.parent
    for path in source_files():
        if path.is_relative_to(CONF_DIR):
            relative = "conf/" + path.relative_to(CONF_DIR).as_posix()
        else:
            relative = path.relative_to(root).as_posix()
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """``package_version``, ``git_commit``, ``git_modified`` and ``source_hash`` (module docstring)."""
    return {
        "package_version": package_version(),
        "git_commit": git_commit(),
        "git_modified": git_modified(),
        "source_hash": source_hash(),
    }


def describe_version(version: dict[str, Any]) -> str:
    """One line: ``0.1.0, commit 1a2b3c4 (modified), source 0123abcd…``."""
    commit = version.get("git_commit")
    where = (
        f"commit {commit[:7]}{' (modified)' if version.get('git_modified') else ''}" if commit else "no git"
    )
    return f"{version.get('package_version')}, {where}, source {str(version.get('source_hash'))[:8]}"


def provenance() -> dict[str, Any]:
    """Versions, the code version and the machine, recorded flat in every summary."""
    import hydra
    import numpy
    import torch

    return {
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
        "hydra_version": hydra.__version__,
        **code_version(),
        "hostname": platform.node(),
    }
