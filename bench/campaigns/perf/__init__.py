"""``python -m bench.perf``: how fast the harness is, as ratios measured in one process and one run.

Every measurement compares a *candidate* with a *baseline* doing the same work, repeats the pair in
alternating order (rotating, for the optimizer table) so that a change of machine load hits both alike, and
reports the median ratio with its spread (min–max over the repeats) next to its goal:

- the vectorized gradient probe is ≥ 10× faster than the per-draw loop (``probe_toy``, ``probe_vae``);
- a training step of the harness costs ≤ 1.10× the same step written as a bare PyTorch loop that computes the
  same losses from the same seed (``harness_step``, ``harness_loop``);
- lazy Adam on a table with 1% of its rows in the gradient is ≥ 20× faster than dense Adam, and costs ≤ 1.5×
  ``torch.optim.SparseAdam`` (``lazy_adam_vs_adam``, ``lazy_adam_vs_sparse_adam``);
- Lookahead(Adam) costs ≤ 1.10× Adam per training step and per optimizer step (``lookahead_step``,
  ``lookahead_optimizer``);
- an 8-run sweep with Hydra's joblib launcher takes ≤ 0.65× the sequential sweep (``sweep_joblib``).

Modules: ``timing`` (the ``Result`` record, paired timing, the machine and its load average), ``bare`` (the
bare-loop baseline), ``measurements`` (one function per comparison) ; the command line, the table and
``results/perf.json`` are ``bench.cli.perf``.
"""

from bench.campaigns.perf.timing import Result

__all__ = ["Result"]
