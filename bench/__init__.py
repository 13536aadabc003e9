"""The benchmark harness: ``python -m bench`` and ``gradbench``, runs, tasks, probes, reports."""

__version__ = "0.1.0"
