"""Tasks: each one file, each following the protocol in ``bench.tasks.base``."""
