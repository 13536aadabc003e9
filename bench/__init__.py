"""The benchmark harness: Hydra CLI (``python -m bench``), runner, tasks, probes, reports, speed benchmarks."""
