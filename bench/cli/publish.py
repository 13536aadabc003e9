"""``python -m bench.publish``: see ``bench.campaigns.publish``."""

from bench.campaigns.publish import main

__all__ = ["main"]
