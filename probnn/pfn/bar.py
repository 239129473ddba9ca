r"""The bar ("Riemann") output distribution of prior-fitted networks.

A PFN predicts a distribution over a real target by classifying it into ``K`` buckets
with borders :math:`b_0 < b_1 < \dots < b_K`. With bucket probabilities :math:`p_k` and
widths :math:`w_k = b_{k+1} - b_k`, the density is uniform inside each inner bucket,

.. math::

    p(y) = p_k / w_k, \qquad b_k \le y < b_{k+1},\quad 0 < k < K - 1,

and the two outer buckets are replaced by half-normal tails with full support: below
:math:`b_1` the density is :math:`p_0\, 2\sigma_0^{-1}\varphi((b_1 - y)/\sigma_0)`, above
:math:`b_{K-1}` it is :math:`p_{K-1}\, 2\sigma_{K-1}^{-1}\varphi((y - b_{K-1})/\sigma_{K-1})`.
Each tail scale is chosen so that the half-normal's median equals the outer bucket's
width, :math:`\sigma = w / \Phi^{-1}(3/4)`. The borders come from quantiles of targets
drawn from the prior (:func:`bar_borders`), so buckets are narrow where targets are
common.

Every quantity is exact for this density: moments, CDF and its inverse, and expected
improvement (a quadratic in each uniform bucket and the Gaussian ``h`` function in the
tails). The class is a numpyro distribution, so :mod:`probnn.bo` acquisition functions
and :mod:`probnn.metrics` accept it unchanged.

Reference: S. Mueller, N. Hollmann, S. Pineda Arango, J. Grabocka and F. Hutter,
"Transformers Can Do Bayesian Inference", ICLR 2022, section 4.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import erfc, log_ndtr, logsumexp, ndtr, ndtri
from jaxtyping import Array, ArrayLike, Float
from numpyro.distributions import constraints

from probnn.bo.acquisition import _log_h

__all__ = ["BarDistribution", "bar_borders"]

#: Phi^{-1}(3/4): the median of a standard half-normal.
_HALF_NORMAL_MEDIAN = 0.6744897501960817
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_LOG_2 = math.log(2.0)
_PHI_0 = 1.0 / math.sqrt(2.0 * math.pi)


def bar_borders(samples: ArrayLike, num_buckets: int) -> np.ndarray:
    """Bucket borders at evenly spaced quantiles of prior target samples.

    Parameters
    ----------
    samples : array
        Targets drawn from the prior, flattened. At least ``10 * num_buckets`` are advised.
    num_buckets : int
        ``K >= 3``: two tails and at least one inner bucket.

    Returns
    -------
    numpy array of shape (K + 1,)
        Strictly increasing borders; the outer ones are the smallest and largest sample.
    """
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, (int, np.integer)) or num_buckets < 3:
        raise ValueError(f"num_buckets must be an integer >= 3, got {num_buckets!r}.")
    values = np.asarray(samples, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size < 2 * num_buckets:
        raise ValueError(
            f"bar_borders needs at least 2 * num_buckets = {2 * num_buckets} finite samples, got {values.size}."
        )
    borders = np.quantile(values, np.linspace(0.0, 1.0, num_buckets + 1))
    # Ties (discrete or clipped samples) would give empty buckets; spread them minimally.
    spacing = np.maximum(np.diff(borders), 1e-9 * max(1.0, float(np.ptp(values))))
    return np.concatenate([borders[:1], borders[0] + np.cumsum(spacing)])


class BarDistribution(dist.Distribution):
    r"""Piecewise-uniform distribution over buckets, with half-normal outer tails.

    Parameters
    ----------
    borders : array of shape (..., K + 1)
        Strictly increasing bucket borders; leading axes broadcast with ``logits``.
    logits : array of shape (..., K)
        Unnormalised log probabilities of the buckets.

    Notes
    -----
    The batch shape is the broadcast of the leading axes. :meth:`affine` maps the
    distribution through ``y -> loc + scale * y`` exactly by moving the borders, which is
    how a PFN trained on standardised targets reports in the user's units.
    """

    arg_constraints = {"borders": constraints.real_vector, "logits": constraints.real_vector}
    support = constraints.real
    pytree_data_fields = ("borders", "logits")

    def __init__(self, borders: ArrayLike, logits: ArrayLike, *, validate_args=None):
        borders = jnp.asarray(borders)
        logits = jnp.asarray(logits)
        if borders.ndim < 1 or logits.ndim < 1 or borders.shape[-1] != logits.shape[-1] + 1:
            raise ValueError(
                f"borders must have one more entry than logits on the last axis; got shapes "
                f"{borders.shape} and {logits.shape}."
            )
        if logits.shape[-1] < 3:
            raise ValueError(f"a bar distribution needs at least 3 buckets, got {logits.shape[-1]}.")
        dtype = jnp.result_type(borders, logits)
        self.borders = borders.astype(dtype)
        self.logits = logits.astype(dtype)
        batch_shape = jax.lax.broadcast_shapes(borders.shape[:-1], logits.shape[:-1])
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    # --- bucket quantities -------------------------------------------------------------

    @property
    def num_buckets(self) -> int:
        return self.logits.shape[-1]

    @property
    def probs(self) -> Float[Array, "... K"]:
        """Bucket probabilities :math:`p_k`."""
        return jax.nn.softmax(self.logits, axis=-1)

    @property
    def log_probs(self) -> Float[Array, "... K"]:
        return jax.nn.log_softmax(self.logits, axis=-1)

    @property
    def _widths(self):
        return jnp.diff(self.borders, axis=-1)

    @property
    def _tail_scales(self):
        widths = self._widths
        return widths[..., 0] / _HALF_NORMAL_MEDIAN, widths[..., -1] / _HALF_NORMAL_MEDIAN

    def _bucket_index(self, value):
        """Index of the bucket holding ``value``: 0 below b_1, K - 1 from b_{K-1} on."""
        inner = self.borders[..., 1:-1]
        return jnp.sum(value[..., None] >= inner, axis=-1)

    def _broadcast(self, value):
        value = jnp.asarray(value, self.logits.dtype)
        shape = jax.lax.broadcast_shapes(jnp.shape(value), self.batch_shape)
        return jnp.broadcast_to(value, shape)

    def _take(self, array, index):
        array = jnp.broadcast_to(array, index.shape + array.shape[-1:])
        return jnp.take_along_axis(array, index[..., None], axis=-1)[..., 0]

    # --- density, CDF, quantiles ---------------------------------------------------------

    def log_prob(self, value: ArrayLike) -> Array:
        value = self._broadcast(value)
        index = self._bucket_index(value)
        log_p = self._take(self.log_probs, index)
        borders = jnp.broadcast_to(self.borders, value.shape + self.borders.shape[-1:])
        widths = self._take(jnp.diff(borders, axis=-1), index)
        sigma_left, sigma_right = (jnp.broadcast_to(s, value.shape) for s in self._tail_scales)

        inner = log_p - jnp.log(widths)
        left_u = borders[..., 1] - value
        right_u = value - borders[..., -2]
        left = log_p + _half_normal_log_pdf(left_u, sigma_left)
        right = log_p + _half_normal_log_pdf(right_u, sigma_right)
        last = self.num_buckets - 1
        return jnp.where(index == 0, left, jnp.where(index == last, right, inner))

    def cdf(self, value: ArrayLike) -> Array:
        value = self._broadcast(value)
        index = self._bucket_index(value)
        probs = jnp.broadcast_to(self.probs, value.shape + (self.num_buckets,))
        borders = jnp.broadcast_to(self.borders, value.shape + self.borders.shape[-1:])
        before = jnp.cumsum(probs, axis=-1) - probs
        p = self._take(probs, index)
        lower = self._take(borders, index)
        width = self._take(jnp.diff(borders, axis=-1), index)
        sigma_left, sigma_right = (jnp.broadcast_to(s, value.shape) for s in self._tail_scales)

        inner = self._take(before, index) + p * jnp.clip((value - lower) / width, 0.0, 1.0)
        left = p * erfc(jnp.maximum(borders[..., 1] - value, 0.0) / (sigma_left * math.sqrt(2.0)))
        right_mass = 1.0 - erfc(jnp.maximum(value - borders[..., -2], 0.0) / (sigma_right * math.sqrt(2.0)))
        right = self._take(before, index) + p * right_mass
        last = self.num_buckets - 1
        return jnp.where(index == 0, left, jnp.where(index == last, right, inner))

    def log_cdf(self, value: ArrayLike) -> Array:
        """``log P(Y <= value)``, accurate far into the left tail."""
        value = self._broadcast(value)
        sigma_left, _ = self._tail_scales
        z = (value - self.borders[..., 1]) / sigma_left
        tail = self.log_probs[..., 0] + _LOG_2 + log_ndtr(jnp.minimum(z, 0.0))
        return jnp.where(z < 0.0, tail, jnp.log(jnp.maximum(self.cdf(value), 1e-300)))

    def icdf(self, q: ArrayLike) -> Array:
        q = self._broadcast(q)
        probs = jnp.broadcast_to(self.probs, q.shape + (self.num_buckets,))
        borders = jnp.broadcast_to(self.borders, q.shape + self.borders.shape[-1:])
        cumulative = jnp.cumsum(probs, axis=-1)
        index = jnp.clip(jnp.sum(q[..., None] > cumulative[..., :-1], axis=-1), 0, self.num_buckets - 1)
        p = self._take(probs, index)
        before = self._take(cumulative, index) - p
        fraction = jnp.clip((q - before) / jnp.maximum(p, 1e-30), 0.0, 1.0)
        lower = self._take(borders, index)
        width = self._take(jnp.diff(borders, axis=-1), index)
        sigma_left, sigma_right = (jnp.broadcast_to(s, q.shape) for s in self._tail_scales)

        inner = lower + fraction * width
        # Left tail: P(Y <= y) = p_0 erfc(u / (sigma sqrt 2)) with u = b_1 - y, so u is the
        # half-normal quantile of 1 - fraction.
        left = borders[..., 1] - sigma_left * ndtri(1.0 - 0.5 * jnp.maximum(fraction, 1e-30))
        right = borders[..., -2] + sigma_right * ndtri(0.5 + 0.5 * jnp.minimum(fraction, 1.0 - 1e-7))
        last = self.num_buckets - 1
        return jnp.where(index == 0, left, jnp.where(index == last, right, inner))

    def sample(self, key, sample_shape=()):
        u = jax.random.uniform(key, tuple(sample_shape) + self.batch_shape, dtype=self.logits.dtype)
        return self.icdf(u)

    # --- moments -----------------------------------------------------------------------

    def _component_moments(self):
        """Mean and variance of each bucket's own density, shape (..., K) each."""
        lower, upper = self.borders[..., :-1], self.borders[..., 1:]
        mean = 0.5 * (lower + upper)
        variance = (upper - lower) ** 2 / 12.0
        sigma_left, sigma_right = self._tail_scales
        mean = mean.at[..., 0].set(self.borders[..., 1] - sigma_left * _SQRT_2_OVER_PI)
        mean = mean.at[..., -1].set(self.borders[..., -2] + sigma_right * _SQRT_2_OVER_PI)
        half_normal_variance = 1.0 - 2.0 / math.pi
        variance = variance.at[..., 0].set(sigma_left**2 * half_normal_variance)
        variance = variance.at[..., -1].set(sigma_right**2 * half_normal_variance)
        return mean, variance

    @property
    def mean(self) -> Array:
        means, _ = self._component_moments()
        return jnp.broadcast_to(jnp.sum(self.probs * means, axis=-1), self.batch_shape)

    @property
    def variance(self) -> Array:
        means, variances = self._component_moments()
        probs = self.probs
        mean = jnp.sum(probs * means, axis=-1, keepdims=True)
        value = jnp.sum(probs * (variances + (means - mean) ** 2), axis=-1)
        return jnp.broadcast_to(value, self.batch_shape)

    # --- transformations ---------------------------------------------------------------

    def affine(self, loc: ArrayLike, scale: ArrayLike) -> "BarDistribution":
        """Return the exact distribution of ``loc + scale * Y`` for ``scale > 0``."""
        loc = jnp.asarray(loc, self.borders.dtype)
        scale = jnp.asarray(scale, self.borders.dtype)
        borders = loc[..., None] + scale[..., None] * self.borders
        return BarDistribution(borders, self.logits)

    def project(self, distribution: dist.Distribution) -> "BarDistribution":
        """Put another distribution onto these buckets, matching each bucket's mass.

        The result is the best this bar format can do for ``distribution``: the gap between
        their log densities is the floor that bucketing alone imposes on a PFN's NLL.
        """
        shape = jax.lax.broadcast_shapes(self.borders.shape[:-1], tuple(distribution.batch_shape))
        inner = jnp.broadcast_to(self.borders[..., 1:-1], shape + (self.num_buckets - 1,))
        cdf = jnp.moveaxis(distribution.cdf(jnp.moveaxis(inner, -1, 0)), 0, -1)
        cdf = jnp.clip(cdf, 0.0, 1.0)
        cdf = jnp.concatenate([jnp.zeros_like(cdf[..., :1]), cdf, jnp.ones_like(cdf[..., :1])], axis=-1)
        mass = jnp.maximum(jnp.diff(cdf, axis=-1), 1e-30)
        return BarDistribution(self.borders, jnp.log(mass))

    # --- acquisition ---------------------------------------------------------------------

    def log_expected_improvement(self, best: ArrayLike) -> Array:
        r"""Exact :math:`\log \mathbb{E}[\max(\mathrm{best} - Y, 0)]`.

        An inner bucket ``[a, b)`` contributes :math:`p (b' - a)(2\,\mathrm{best} - a - b') / (2 w)`
        with :math:`b' = \min(b, \mathrm{best})` when best exceeds ``a``; the left tail
        contributes :math:`p\, 2\sigma h(z)` for :math:`z = (\mathrm{best} - b_1)/\sigma < 0`
        and :math:`p\,\sigma (z + \sqrt{2/\pi})` otherwise, with
        :math:`h(z) = \varphi(z) + z\Phi(z)`; the right tail contributes
        :math:`p\, 2\sigma (h(z) - z/2 - \varphi(0))` for :math:`z = (\mathrm{best} - b_{K-1})/\sigma > 0`.
        The contributions are summed in log space.
        """
        best = self._broadcast(best)[..., None]
        log_p = self.log_probs
        lower, upper = self.borders[..., :-1], self.borders[..., 1:]
        width = upper - lower
        sigma_left, sigma_right = self._tail_scales

        # Inner buckets: zero unless best > a. The inner where keeps logs of positive values
        # so that gradients stay finite in the masked entries.
        active = best > lower
        clipped = jnp.minimum(upper, best)
        span = jnp.where(active, clipped - lower, 1.0)
        reach = jnp.where(active, 2.0 * best - lower - clipped, 1.0)
        inner = log_p + jnp.log(span) + jnp.log(reach) - jnp.log(width) - _LOG_2
        inner = jnp.where(active, inner, -jnp.inf)

        z_left = (best[..., 0] - self.borders[..., 1]) / sigma_left
        left_ei = jnp.where(
            z_left >= 0.0,
            jnp.log(jnp.maximum(z_left, 0.0) + _SQRT_2_OVER_PI),
            _LOG_2 + _log_h(jnp.minimum(z_left, 0.0)),
        )
        left = log_p[..., 0] + jnp.log(sigma_left) + left_ei

        z_right = (best[..., 0] - self.borders[..., -2]) / sigma_right
        right_active = z_right > 0.0
        z_pos = jnp.where(right_active, z_right, 1.0)
        gap = _h_minus_linear(z_pos)
        right = log_p[..., -1] + _LOG_2 + jnp.log(sigma_right) + jnp.log(gap)
        right = jnp.where(right_active, right, -jnp.inf)

        terms = jnp.concatenate([left[..., None], inner[..., 1:-1], right[..., None]], axis=-1)
        return logsumexp(terms, axis=-1)

    def log_probability_of_improvement(self, best: ArrayLike) -> Array:
        """``log P(Y < best)``."""
        return self.log_cdf(best)

    def upper_confidence_bound(self, beta: ArrayLike = 2.0) -> Array:
        """``sqrt(beta) * sd - mean``, the negated lower confidence bound."""
        return jnp.sqrt(jnp.asarray(beta, self.logits.dtype)) * jnp.sqrt(self.variance) - self.mean


def _half_normal_log_pdf(u, sigma):
    """Log density of a half-normal with scale ``sigma`` at ``u >= 0`` (finite for any ``u``)."""
    z = u / sigma
    return _LOG_2 - jnp.log(sigma) - 0.5 * z**2 - 0.5 * math.log(2.0 * math.pi)


def _h_minus_linear(z):
    r""":math:`h(z) - z/2 - \varphi(0)` for ``z > 0``, with a series where it cancels.

    Its Taylor series at 0 is :math:`\varphi(0)(z^2/2 - z^4/24 + \dots)`.
    """
    direct = jnp.exp(-0.5 * z**2) * _PHI_0 + z * ndtr(z) - 0.5 * z - _PHI_0
    series = _PHI_0 * z**2 * (0.5 - z**2 / 24.0)
    return jnp.where(z < 1e-2, series, direct)
