"""Covariance functions and the stable linear algebra that processes build on."""

from probnn.kernels.base import Kernel
from probnn.kernels.gpjax_adapter import GPJaxKernel, as_gpjax
from probnn.kernels.linalg import (
    CholeskyError,
    CholeskyResult,
    NumericalWarning,
    cho_solve,
    cholesky,
    cholesky_with_jitter,
    factor_with_jitter,
)
from probnn.kernels.nngp import NNGP, NTK
from probnn.kernels.stationary import RBF, Matern52

__all__ = [
    "Kernel",
    "NNGP",
    "NTK",
    "RBF",
    "Matern52",
    "GPJaxKernel",
    "as_gpjax",
    "CholeskyError",
    "CholeskyResult",
    "NumericalWarning",
    "cho_solve",
    "cholesky",
    "cholesky_with_jitter",
    "factor_with_jitter",
]
