"""Gradient estimators for E_{z~p_θ}[f(z)], usable on their own in any PyTorch model.

Every estimator is called as ``surrogate = estimator(params, f, samples)``; see ``estimators.base``.
"""

from estimators.base import Estimator, EstimatorError, Gaussian
from estimators.codebook import Codebook, EMACodebook
from estimators.disarm import DisARM
from estimators.exact import Exact
from estimators.gst import GappedStraightThrough
from estimators.gumbel import Gumbel
from estimators.gumbel_rao import GumbelRao
from estimators.gumbel_st import GumbelST
from estimators.leg import LocalExpectation
from estimators.measure_valued import MeasureValued
from estimators.none import NoSampling
from estimators.rebar import REBAR
from estimators.reinmax import ReinMax
from estimators.reinmax_cv import ReinMaxCV
from estimators.reinmax_rao import ReinMaxRao
from estimators.relax import LAX, RELAX
from estimators.reparam import Reparam
from estimators.rodeo import RODEO
from estimators.schedule import TemperatureSchedule
from estimators.score_function import ScoreFunction
from estimators.st import StraightThrough
from estimators.unordered_set import UnorderedSet
from estimators.vimco import VIMCO
from estimators.vq_rotation import VQRotation
from estimators.vq_st import VQStraightThrough
from estimators.vq_stochastic import StochasticVQ

__all__ = [
    "Codebook",
    "DisARM",
    "EMACodebook",
    "Estimator",
    "EstimatorError",
    "Exact",
    "GappedStraightThrough",
    "Gaussian",
    "Gumbel",
    "GumbelRao",
    "GumbelST",
    "LAX",
    "LocalExpectation",
    "MeasureValued",
    "NoSampling",
    "REBAR",
    "RELAX",
    "RODEO",
    "ReinMax",
    "ReinMaxCV",
    "ReinMaxRao",
    "Reparam",
    "ScoreFunction",
    "StochasticVQ",
    "StraightThrough",
    "TemperatureSchedule",
    "UnorderedSet",
    "VIMCO",
    "VQRotation",
    "VQStraightThrough",
]
