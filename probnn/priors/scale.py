r"""Priors on the last-layer variance ``s`` of an infinitely wide network.

Putting a prior on ``s`` turns the network's Gaussian process ``f | s ~ GP(0, s k)`` into a
scale mixture of Gaussian processes (Lee, Yun, Yang and Lee, "Scale Mixtures of Neural
Network Gaussian Processes", ICLR 2022). Any numpyro distribution whose support is the
positive half-line can serve; this module adds the Burr type XII distribution, which
numpyro lacks, and constructors with the defaults used across probnn.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.util import promote_shapes, validate_sample


class BurrXII(dist.Distribution):
    r"""Burr type XII distribution on ``(0, inf)``.

    With shape parameters ``c, k > 0`` and scale ``lambda > 0`` and ``z = s / lambda``,

    .. math::

        p(s) = \frac{c k}{\lambda} z^{c - 1} (1 + z^c)^{-k - 1}, \qquad
        F(s) = 1 - (1 + z^c)^{-k}, \qquad
        F^{-1}(u) = \lambda \big((1 - u)^{-1/k} - 1\big)^{1/c}.

    The right tail decays like ``s^{-(c k + 1)}``, so moments of order ``r`` exist only for
    ``r < c k``. Sampling inverts the CDF, so draws are reparameterised.

    Parameters
    ----------
    concentration1 : float or array
        ``c``, the power on ``z``.
    concentration0 : float or array
        ``k``, the tail exponent.
    scale : float or array
        ``lambda``.
    """

    arg_constraints = {
        "concentration1": constraints.positive,
        "concentration0": constraints.positive,
        "scale": constraints.positive,
    }
    support = constraints.positive
    reparametrized_params = ["concentration1", "concentration0", "scale"]
    pytree_data_fields = ("concentration1", "concentration0", "scale")

    def __init__(self, concentration1, concentration0, scale=1.0, *, validate_args=None):
        self.concentration1, self.concentration0, self.scale = promote_shapes(
            concentration1, concentration0, scale
        )
        batch_shape = jax.lax.broadcast_shapes(
            jnp.shape(concentration1), jnp.shape(concentration0), jnp.shape(scale)
        )
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape
        dtype = jnp.result_type(self.scale, float)
        u = jax.random.uniform(key, shape, dtype=dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0)
        return self.icdf(u)

    @validate_sample
    def log_prob(self, value):
        c, k, scale = self.concentration1, self.concentration0, self.scale
        log_z = jnp.log(value) - jnp.log(scale)
        return (
            jnp.log(c)
            + jnp.log(k)
            - jnp.log(scale)
            + (c - 1.0) * log_z
            - (k + 1.0) * jnp.logaddexp(0.0, c * log_z)
        )

    def cdf(self, value):
        log_z = jnp.log(value) - jnp.log(self.scale)
        # 1 - (1 + z^c)^(-k) = -expm1(-k log1p(z^c)), accurate for small z.
        return -jnp.expm1(-self.concentration0 * jnp.logaddexp(0.0, self.concentration1 * log_z))

    def icdf(self, q):
        # (1 - q)^(-1/k) - 1 = expm1(-log1p(-q) / k), accurate for small q.
        z_power_c = jnp.expm1(-jnp.log1p(-q) / self.concentration0)
        return self.scale * z_power_c ** (1.0 / self.concentration1)

    @property
    def mean(self):
        c, k, scale = self.concentration1, self.concentration0, self.scale
        # E[s] = lambda k B(k - 1/c, 1 + 1/c) when c k > 1.
        log_beta = (
            jax.scipy.special.gammaln(k - 1.0 / c)
            + jax.scipy.special.gammaln(1.0 + 1.0 / c)
            - jax.scipy.special.gammaln(k + 1.0)
        )
        value = scale * k * jnp.exp(log_beta)
        return jnp.where(c * k > 1.0, value, jnp.inf)

    @property
    def variance(self):
        c, k, scale = self.concentration1, self.concentration0, self.scale
        gammaln = jax.scipy.special.gammaln

        def raw_moment(r):
            log_beta = gammaln(k - r / c) + gammaln(1.0 + r / c) - gammaln(k + 1.0)
            return scale**r * k * jnp.exp(log_beta)

        value = raw_moment(2.0) - raw_moment(1.0) ** 2
        return jnp.where(c * k > 2.0, value, jnp.inf)


def inverse_gamma(concentration: float = 3.0, rate: float = 2.0) -> dist.InverseGamma:
    """Inverse-gamma prior: the scale mixture is then a Student-t process with ``2 concentration`` degrees of freedom."""
    return dist.InverseGamma(concentration, rate)


def burr_xii(c: float = 2.0, k: float = 2.0, scale: float = 1.0) -> BurrXII:
    """Burr type XII prior: heavy tails with moments below order ``c k``."""
    return BurrXII(c, k, scale)


def half_cauchy(scale: float = 1.0) -> dist.HalfCauchy:
    """Half-Cauchy prior on the last-layer variance: no finite moments."""
    return dist.HalfCauchy(scale)


def log_normal(loc: float = 0.0, scale: float = 1.0) -> dist.LogNormal:
    """Log-normal prior: light tails in ``log s``, all moments finite."""
    return dist.LogNormal(loc, scale)


#: Named constructors, as used by the ``probnn fit`` model names.
SCALE_PRIORS = {
    "inverse-gamma": inverse_gamma,
    "burr": burr_xii,
    "half-cauchy": half_cauchy,
    "log-normal": log_normal,
}


def check_scale_prior(prior) -> dist.Distribution:
    """Check that ``prior`` is a scalar numpyro distribution on the positive half-line.

    Raises
    ------
    ValueError
        If ``prior`` is not a numpyro ``Distribution``, has a batch or event shape, or has a
        support that reaches below zero.
    """
    if not isinstance(prior, dist.Distribution):
        raise ValueError(
            "scale_prior must be a numpyro distribution with positive support, such as "
            f"numpyro.distributions.InverseGamma(3.0, 2.0) or probnn.priors.BurrXII(2.0, 2.0); got {prior!r}."
        )
    if prior.batch_shape != () or prior.event_shape != ():
        raise ValueError(
            f"scale_prior must be a scalar distribution, got batch shape {prior.batch_shape} and "
            f"event shape {prior.event_shape}. Pass scalar parameters."
        )
    support = prior.support
    lower = getattr(support, "lower_bound", None)
    if lower is None or not np.all(np.asarray(lower) >= 0.0) or support.is_discrete:
        raise ValueError(
            f"scale_prior must have support on the positive half-line, but {type(prior).__name__} "
            f"has support {support}. Use a distribution such as InverseGamma, LogNormal, "
            "HalfCauchy or BurrXII."
        )
    return prior


def prior_parameters(prior: dist.Distribution) -> dict:
    """Return the parameters of ``prior`` named as its constructor takes them."""
    return {name: jnp.asarray(getattr(prior, name)) for name in prior.arg_constraints}


def rebuild_prior(prior: dist.Distribution, parameters: dict) -> dist.Distribution:
    """Return a distribution of the same type as ``prior`` with new ``parameters``."""
    return type(prior)(**parameters)
