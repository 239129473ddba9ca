"""Gaussian, Student-t and scale-mixture processes with NNGP, NTK and stationary kernels, exact or sparse."""

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
from probnn.processes.sparse import SparsePosterior, SparseProcess
from probnn.processes.large import fit_large
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
    "SparseProcess",
    "SparsePosterior",
    "fit_large",
    "OneHotRegressionClassifier",
    "SparseVariationalClassifier",
]
