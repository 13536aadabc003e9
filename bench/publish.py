"""``python -m bench.publish``: see ``bench.cli.publish``."""

import sys

from bench.cli.publish import main

if __name__ == "__main__":
    sys.exit(main())
