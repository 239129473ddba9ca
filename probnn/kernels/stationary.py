"""Stationary kernels with automatic relevance determination (ARD) lengthscales."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from probnn.kernels.base import Kernel, _log_normal_log_density, positive_array


def scaled_squared_distance(
    X1: Float[Array, "n d"], X2: Float[Array, "m d"], lengthscale: Float[Array, "..."]
) -> Float[Array, "n m"]:
    """Compute ``sum_i ((x_i - x'_i) / l_i)^2`` for all pairs by one matrix product.

    Rounding can make the expansion ``|a|^2 + |b|^2 - 2 a.b`` slightly negative, so it is
    clipped at zero.
    """
    A = X1 / lengthscale
    B = X2 / lengthscale
    sq = jnp.sum(A**2, axis=-1)[:, None] + jnp.sum(B**2, axis=-1)[None, :] - 2.0 * A @ B.T
    return jnp.maximum(sq, 0.0)


def _safe_sqrt(x):
    # The double where keeps the gradient finite at zero distance, where sqrt has an
    # infinite derivative; Matern-5/2 itself is smooth in the squared distance there.
    positive = x > 0.0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


class _Stationary(Kernel):
    variance: Float[Array, ""]
    lengthscale: Float[Array, "..."]

    def __init__(self, lengthscale=1.0, variance=1.0):
        self.lengthscale = positive_array(lengthscale, "lengthscale")
        self.variance = positive_array(variance, "variance")
        if self.variance.ndim != 0:
            raise ValueError(f"variance must be a scalar, got shape {self.variance.shape}.")

    def diag(self, X):
        return jnp.full(X.shape[0], self.variance, dtype=jnp.result_type(X, self.variance))

    def with_input_dim(self, dim: int) -> "_Stationary":
        """Return a copy with one lengthscale per input dimension (ARD).

        A scalar lengthscale is repeated; a vector must already have ``dim`` entries.
        """
        if self.lengthscale.ndim == 0:
            return type(self)(lengthscale=jnp.full(dim, self.lengthscale), variance=self.variance)
        if self.lengthscale.shape[0] != dim:
            raise ValueError(
                f"lengthscale has {self.lengthscale.shape[0]} entries but the inputs have {dim} "
                "dimensions; pass a scalar or one lengthscale per dimension."
            )
        return self

    def log_prior(self):
        """Log density of the default hyperprior, for inputs scaled to the unit cube.

        Lengthscales get the dimension-scaled log-normal prior of Hvarfner, Hellsten and
        Nardi, "Vanilla Bayesian Optimization Performs Great in High Dimensions" (ICML 2024):
        ``log l ~ N(sqrt(2) + log(d) / 2, 3)``. The variance gets ``log v ~ N(0, 2^2)``.
        """
        dim = self.lengthscale.size
        loc = jnp.sqrt(2.0) + 0.5 * jnp.log(dim)
        log_l = jnp.log(jnp.ravel(self.lengthscale))
        lengthscale_term = jnp.sum(_log_normal_log_density(log_l, loc, jnp.sqrt(3.0)))
        variance_term = _log_normal_log_density(jnp.log(self.variance), 0.0, 2.0)
        return lengthscale_term + variance_term


class RBF(_Stationary):
    r"""Squared-exponential kernel :math:`k(x, x') = v \exp(-r^2 / 2)`.

    Here :math:`r^2 = \sum_i (x_i - x'_i)^2 / l_i^2`, with one lengthscale per input
    dimension when ``lengthscale`` is a vector (ARD).

    Parameters
    ----------
    lengthscale : float or array of shape (d,)
    variance : float
        Output scale ``v``.
    """

    def cross(self, X1, X2):
        return self.variance * jnp.exp(-0.5 * scaled_squared_distance(X1, X2, self.lengthscale))


class Matern52(_Stationary):
    r"""Matern kernel with smoothness 5/2.

    :math:`k(x, x') = v (1 + \sqrt{5} r + 5 r^2 / 3) \exp(-\sqrt{5} r)` with the scaled
    distance :math:`r` of :class:`RBF` (Rasmussen and Williams, 2006, eq. 4.17).

    Parameters
    ----------
    lengthscale : float or array of shape (d,)
    variance : float
        Output scale ``v``.
    """

    def cross(self, X1, X2):
        r2 = scaled_squared_distance(X1, X2, self.lengthscale)
        r = _safe_sqrt(r2)
        sqrt5_r = jnp.sqrt(5.0) * r
        return self.variance * (1.0 + sqrt5_r + 5.0 / 3.0 * r2) * jnp.exp(-sqrt5_r)
