"""``python -m bench.check``: see ``bench.cli.check``."""

import sys

from bench.cli.check import main

if __name__ == "__main__":
    sys.exit(main())
