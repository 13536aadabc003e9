"""``python -m bench.perf``: see ``bench.cli.perf``."""

import sys

from bench.cli.perf import main

if __name__ == "__main__":
    sys.exit(main())
