"""The benchmark harness: the Hydra CLI (``python -m bench``), runner, tasks, probes, reports, perf."""
