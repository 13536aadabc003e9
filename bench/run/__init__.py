"""Layer 2, one run: from a config to a training run probed along its trajectory, and its files.

``build`` (config → task, estimator, optimizer, settings checked), ``device`` (where a run computes, what a
timing waits for, peak memory), ``costs`` (f evaluations and FLOPs of one estimate), ``probe/`` (M draws of
a gradient estimate and their statistics; the reference gradient), ``state`` (the training state as one
object: capture and restore), ``checkpoint`` (the checkpoint file format and its schedule), ``signals``
(stop signals), ``loop`` (the training loop), ``runner`` (one run, its summary), ``sweep`` (resuming sweeps,
threads under launchers) and ``preflight`` (the command line checked before Hydra runs).

It imports the file formats (``bench.formats``), the tasks (``bench.tasks``), ``estimators`` and ``optim``;
never the report, the campaigns or the command line.
"""
