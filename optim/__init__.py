"""Optimizers: Lookahead and lazy Adam (``torch.optim`` supplies Adam, AdamW, SGD and SparseAdam).

A library on its own: nothing here imports the benchmark harness (``bench``).
"""

from optim.lazy import LazyAdam, lazy_param_groups
from optim.lookahead import Lookahead

__all__ = ["LazyAdam", "Lookahead", "lazy_param_groups"]
