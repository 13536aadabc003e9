"""``python -m bench.export``: see ``bench.cli.export``."""

import sys

from bench.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
