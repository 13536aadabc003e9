"""``python -m bench``: one run, or a sweep with ``-m`` (``bench.cli.main``)."""

from bench.cli.main import console

console()
