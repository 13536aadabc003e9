"""``python -m bench.tune``: see ``bench.cli.tune``."""

import sys

from bench.cli.tune import main

if __name__ == "__main__":
    sys.exit(main())
