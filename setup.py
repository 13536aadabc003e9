"""The package list of the wheel (the rest of the build's settings are in pyproject.toml).

``bench``, ``estimators`` and ``optim`` with their subpackages, and ``bench.conf``: the Hydra configs, which
stay in ``conf/`` at the top of the repository and are mapped into the package by ``package-dir``.
"""

from setuptools import find_packages, setup

PACKAGES = find_packages(include=["bench", "bench.*", "estimators", "estimators.*", "optim", "optim.*"])

setup(packages=[*PACKAGES, "bench.conf"])
