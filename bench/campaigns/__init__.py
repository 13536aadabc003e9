"""Layer 4, campaigns over many runs: ``tuning/`` (the two-stage optimizer tuning protocol), ``same_point/``
(the same-point gradient study: every estimator probed at a trajectory's checkpoints), ``publish`` (run every
study of the results page, then write it) and ``perf/`` (speed measurements as ratios in one process).

They use one run (``bench.run``) and the report (``bench.report``); the command line (``bench.cli``) uses
them.
"""
