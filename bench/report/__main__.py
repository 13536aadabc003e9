"""``python -m bench.report``: see ``bench.cli.report``."""

import sys

from bench.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
