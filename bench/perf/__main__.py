"""``python -m bench.perf``: see ``bench.perf.cli``."""

import sys

from bench.perf.cli import main

sys.exit(main())
