"""Exact Gaussian and Student-t processes with NNGP, NTK and stationary kernels."""

from probnn.processes.exact import (
    ExactPosterior,
    GaussianPosterior,
    GaussianProcess,
    StudentTPosterior,
    StudentTPredictive,
    StudentTProcess,
)

__all__ = [
    "GaussianProcess",
    "StudentTProcess",
    "ExactPosterior",
    "GaussianPosterior",
    "StudentTPosterior",
    "StudentTPredictive",
]
