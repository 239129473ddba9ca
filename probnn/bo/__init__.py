"""Bayesian optimization: test problems, acquisition functions, candidate search and the loop."""

from probnn.bo.acquisition import (
    ACQUISITIONS,
    expected_improvement,
    log_expected_improvement,
    log_probability_of_improvement,
    upper_confidence_bound,
)
from probnn.bo.loop import BayesianOptimization
from probnn.bo.optimize import optimize_acquisition
from probnn.bo.problems import Problem, get_problem, list_problems
from probnn.bo.surrogates import SURROGATES, make_surrogate

__all__ = [
    "ACQUISITIONS",
    "BayesianOptimization",
    "Problem",
    "SURROGATES",
    "expected_improvement",
    "get_problem",
    "list_problems",
    "log_expected_improvement",
    "log_probability_of_improvement",
    "make_surrogate",
    "optimize_acquisition",
    "upper_confidence_bound",
]
