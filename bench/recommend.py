"""``python -m bench.recommend``: see ``bench.cli.recommend``."""

import sys

from bench.cli.recommend import main

if __name__ == "__main__":
    sys.exit(main())
