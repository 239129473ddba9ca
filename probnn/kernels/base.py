"""Kernel base class and input validation shared by every covariance function."""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


class Kernel(eqx.Module):
    """Covariance function evaluated on whole input matrices.

    A kernel is an immutable pytree whose array fields are positive hyperparameters.
    Subclasses implement :meth:`cross` (the cross-covariance of two input matrices) and
    :meth:`diag` (the variance at each input), both as matrix programs rather than
    pointwise maps, so a Gram matrix costs one matrix product plus elementwise work.

    The field ``variance`` is the output scale. For network kernels it is the variance
    of the last layer, which is the quantity a scale mixture puts a prior on.
    """

    variance: Float[Array, ""]

    @abc.abstractmethod
    def cross(self, X1: Float[Array, "n d"], X2: Float[Array, "m d"]) -> Float[Array, "n m"]:
        """Compute the cross-covariance matrix ``k(X1, X2)``."""

    @abc.abstractmethod
    def diag(self, X: Float[Array, "n d"]) -> Float[Array, " n"]:
        """Compute the variances ``k(x, x)`` for each row of ``X``."""

    def gram(self, X: Float[Array, "n d"]) -> Float[Array, "n n"]:
        """Compute the Gram matrix ``k(X, X)`` with the exact diagonal of :meth:`diag`."""
        K = self.cross(X, X)
        n = X.shape[0]
        index = jnp.arange(n)
        return K.at[index, index].set(self.diag(X))

    def __call__(self, X1: Float[Array, "n d"], X2: Float[Array, "m d"] | None = None) -> Float[Array, "n m"]:
        """Compute ``k(X1, X2)``, or the Gram matrix of ``X1`` when ``X2`` is omitted."""
        if X2 is None:
            return self.gram(X1)
        return self.cross(X1, X2)

    def log_prior(self) -> Float[Array, ""]:
        """Log density of the default weak hyperprior, used for MAP type-II fitting.

        The default is a log-normal prior with median 1 and log-scale 2 on every
        hyperparameter, which only discourages values many orders of magnitude away.
        """
        leaves = [jnp.ravel(leaf) for leaf in _hyperparameter_leaves(self)]
        log_values = jnp.log(jnp.concatenate(leaves))
        return jnp.sum(_log_normal_log_density(log_values, 0.0, 2.0))

    def with_input_dim(self, dim: int) -> "Kernel":
        """Return a copy whose per-dimension hyperparameters match ``dim`` inputs.

        Kernels without per-dimension hyperparameters return themselves.
        """
        return self


def _hyperparameter_leaves(module: eqx.Module) -> list[Array]:
    return [leaf for leaf in jax.tree.leaves(module) if eqx.is_inexact_array(leaf)]


def _log_normal_log_density(log_value, loc, scale):
    """Log density of a log-normal variable, written in terms of its logarithm.

    The Jacobian term ``-log_value`` is included, so this is the density of the
    value itself.
    """
    z = (log_value - loc) / scale
    return -0.5 * z**2 - jnp.log(scale) - 0.5 * jnp.log(2.0 * jnp.pi) - log_value


def positive_array(value, name: str, dtype=None) -> Array:
    """Convert a hyperparameter to a floating array and check that it is positive and finite."""
    array = np.asarray(value, dtype=np.float64 if dtype is None else dtype)
    if array.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a 1-d array, got shape {array.shape}.")
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}.")
    return jnp.asarray(array)


def check_inputs(X, name: str = "X") -> Array:
    """Return ``X`` as an ``(n, d)`` array, reading a 1-d array as ``n`` scalar inputs.

    Raises
    ------
    ValueError
        If ``X`` has more than two dimensions or contains NaN or infinity.
    """
    array = np.asarray(X)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(
            f"{name} must have shape (n, d), or (n,) for scalar inputs; got shape {array.shape}."
        )
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}.")
    if not np.all(np.isfinite(array)):
        rows = np.unique(np.nonzero(~np.isfinite(array))[0])[:5].tolist()
        raise ValueError(f"{name} contains NaN or infinite values (rows {rows}); remove or impute them.")
    return array
