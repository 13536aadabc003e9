"""Gradient estimators for E_{z~p_θ}[f(z)], usable on their own in any PyTorch model.

Every estimator is called as ``surrogate = estimator(params, f, samples)``; see ``estimators.base``.
"""

from estimators.base import Estimator, EstimatorError, Gaussian
from estimators.exact import Exact
from estimators.gumbel import Gumbel
from estimators.gumbel_st import GumbelST
from estimators.reparam import Reparam
from estimators.score_function import ScoreFunction
from estimators.st import StraightThrough

__all__ = [
    "Estimator",
    "EstimatorError",
    "Exact",
    "Gaussian",
    "Gumbel",
    "GumbelST",
    "Reparam",
    "ScoreFunction",
    "StraightThrough",
]
