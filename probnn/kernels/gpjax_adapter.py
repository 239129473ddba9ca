"""Use probnn kernels inside gpjax models."""

from __future__ import annotations

import gpjax
import jax.numpy as jnp
import lineax as lx
from gpjax.kernels.computations import AbstractKernelComputation

from probnn.kernels.base import Kernel


class _MatrixComputation(AbstractKernelComputation):
    """gpjax compute engine that delegates to the wrapped kernel's matrix programs."""

    def _cross_covariance(self, kernel, x, y):
        return kernel.kernel.cross(kernel.slice_input(x), kernel.slice_input(y))

    def _gram(self, kernel, x):
        return kernel.kernel.gram(kernel.slice_input(x))

    def _diagonal(self, kernel, inputs):
        return lx.TaggedLinearOperator(
            lx.DiagonalLinearOperator(kernel.kernel.diag(kernel.slice_input(inputs))),
            lx.positive_semidefinite_tag,
        )


class GPJaxKernel(gpjax.kernels.AbstractKernel):
    """A probnn :class:`~probnn.kernels.Kernel` as a gpjax kernel.

    Gram matrices and cross-covariances go through probnn's matrix code rather than
    gpjax's pointwise ``vmap``, so the NNGP recursion runs once per matrix.

    Examples
    --------
    >>> import gpjax, jax.numpy as jnp
    >>> from probnn.kernels import NNGP
    >>> prior = gpjax.gps.Prior(mean_function=gpjax.mean_functions.Zero(),
    ...                         kernel=GPJaxKernel(NNGP(depth=2)))
    """

    kernel: Kernel
    name: str = "probnn"

    def __init__(self, kernel: Kernel, active_dims=None):
        if not isinstance(kernel, Kernel):
            raise ValueError(f"kernel must be a probnn.kernels.Kernel, got {type(kernel).__name__}.")
        super().__init__(active_dims=active_dims, compute_engine=_MatrixComputation())
        self.kernel = kernel
        self.name = f"probnn.{type(kernel).__name__}"

    def __call__(self, x, y):
        x = self.slice_input(jnp.atleast_1d(x))[None, :]
        y = self.slice_input(jnp.atleast_1d(y))[None, :]
        return self.kernel.cross(x, y)[0, 0]


def as_gpjax(kernel: Kernel) -> GPJaxKernel:
    """Wrap a probnn kernel so gpjax priors, posteriors and objectives accept it."""
    return GPJaxKernel(kernel)
