"""``python -m bench``: one run, a sweep with ``-m``, or a command (``bench.cli.console``)."""

from bench.cli.console import main

main()
