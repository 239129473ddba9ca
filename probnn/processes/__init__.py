"""Exact Gaussian, Student-t and scale-mixture processes with NNGP, NTK and stationary kernels."""

from probnn.processes.exact import (
    ExactPosterior,
    GaussianPosterior,
    GaussianProcess,
    StudentTPosterior,
    StudentTPredictive,
    StudentTProcess,
)
from probnn.processes.classification import OneHotRegressionClassifier, SparseVariationalClassifier
from probnn.processes.scale_mixture import ScaleMixturePosterior, ScaleMixtureProcess
from probnn.processes.trained import GradientTrainedEnsemble

__all__ = [
    "ScaleMixtureProcess",
    "ScaleMixturePosterior",
    "GaussianProcess",
    "StudentTProcess",
    "ExactPosterior",
    "GaussianPosterior",
    "StudentTPosterior",
    "StudentTPredictive",
    "GradientTrainedEnsemble",
    "OneHotRegressionClassifier",
    "SparseVariationalClassifier",
]
