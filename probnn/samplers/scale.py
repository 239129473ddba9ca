r"""Posterior of a single positive scale by quadrature or importance sampling.

A scale mixture of Gaussian processes has ``y | s ~ N(0, s A)`` with ``s ~ p(s)``. With
``q = y^T A^{-1} y`` and ``n`` targets the data enter only through

.. math::

    \log p(y \mid s) = -\tfrac{n}{2} \log(2 \pi s) - \tfrac12 \log|A| - \frac{q}{2 s},

so the posterior of ``s`` is one-dimensional. In ``t = log s`` its unnormalised log density is

.. math::

    g(t) = \log p_s(e^t) + t - \tfrac{n}{2} t - \tfrac{q}{2} e^{-t},

and ``log p(y) = -n/2 log(2 pi) - 1/2 log|A| + log \int e^{g(t)} dt``.

Both estimators return nodes ``t_j`` with normalised log weights, so the predictive is a
finite mixture of Gaussians either way:

- :func:`scale_quadrature` (the default in probnn) finds the region where ``g`` lies within
  :data:`LOG_DENSITY_DROP` of its maximum by zooming in on a coarse grid, then applies the
  trapezoid rule there. For smooth integrands that decay fast, the trapezoid rule converges
  geometrically in the number of nodes, so 128 nodes reach double precision for the priors
  in :mod:`probnn.priors`.
- :func:`scale_importance_sampling` draws ``s`` from the prior and weights each draw by the
  likelihood, as Lee, Yun, Yang and Lee (ICLR 2022) do. Its effective sample size shrinks
  like ``n^{-1/2}``, because the posterior in ``t`` narrows with more data.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jax.scipy.special import logsumexp
from jaxtyping import Array, Float

#: The quadrature keeps the region where ``g`` is within this many nats of its maximum.
#: The rest carries relative mass below ``exp(-45)``, about ``3e-20``.
LOG_DENSITY_DROP = 45.0

#: The first grid covers ``t = log s`` in this interval, i.e. ``s`` from about ``1e-26``
#: to ``1e26``. Scales on the standardised target scale lie far inside it.
LOG_SCALE_RANGE = (-60.0, 60.0)

#: Zoom stages before the final grid. Each stage shrinks the interval to the region above
#: the threshold plus one grid step on each side, so three stages resolve posteriors whose
#: width in ``t`` is at least about ``1e-4 (b - a)``, i.e. ``n`` up to about ``10^7``.
ZOOM_STAGES = 3


class ScaleNodes(NamedTuple):
    """Weighted nodes of the posterior of a scale ``s``.

    Attributes
    ----------
    log_scales : array of shape (K,)
        ``t_j = log s_j``.
    log_weights : array of shape (K,)
        Normalised log weights, ``logsumexp(log_weights) == 0``.
    log_evidence : array of shape ()
        ``log \\int p(s) exp(-n/2 log s - q/(2 s)) ds`` (up to the factors that do not
        depend on ``s``): the scale-dependent part of the log marginal likelihood.
    """

    log_scales: Float[Array, " K"]
    log_weights: Float[Array, " K"]
    log_evidence: Float[Array, ""]

    def mean(self) -> Array:
        """Posterior mean of ``s``."""
        return jnp.sum(jnp.exp(self.log_weights + self.log_scales))

    def effective_sample_size(self) -> Array:
        """Kish's effective sample size ``1 / sum w_j^2`` of the normalised weights."""
        return 1.0 / jnp.sum(jnp.exp(2.0 * self.log_weights))


def log_posterior_kernel(log_prob: Callable, t, n, quadratic):
    """Unnormalised log posterior density of ``t = log s``: ``g(t)`` of the module docstring."""
    s_log_density = log_prob(jnp.exp(t))
    return s_log_density + t - 0.5 * n * t - 0.5 * quadratic * jnp.exp(-t)


def _region_above_threshold(t, g):
    """Interval around the nodes whose ``g`` lies within the threshold, widened by one step."""
    step = t[1] - t[0]
    finite = jnp.isfinite(g)
    g_max = jnp.max(jnp.where(finite, g, -jnp.inf))
    keep = finite & (g >= g_max - LOG_DENSITY_DROP)
    lower = jnp.min(jnp.where(keep, t, jnp.inf)) - step
    upper = jnp.max(jnp.where(keep, t, -jnp.inf)) + step
    return lower, upper


def scale_quadrature(log_prob: Callable, n, quadratic, num_nodes: int = 128) -> ScaleNodes:
    """Integrate over ``t = log s`` with the trapezoid rule on an adaptively zoomed grid.

    Parameters
    ----------
    log_prob : callable
        Log density of the prior of ``s``, e.g. ``prior.log_prob``.
    n : scalar
        Number of targets.
    quadratic : scalar
        ``q = y^T A^{-1} y``.
    num_nodes : int
        Nodes per grid; the final mixture has this many components.

    Returns
    -------
    ScaleNodes
        The node placement carries no gradient. The integral does not depend on it once
        the integrand is resolved, so gradients of ``log_evidence`` with respect to ``n``,
        ``quadratic`` and the prior's parameters are exact.
    """
    dtype = jnp.result_type(quadratic, float)
    lower = jnp.asarray(LOG_SCALE_RANGE[0], dtype)
    upper = jnp.asarray(LOG_SCALE_RANGE[1], dtype)
    frozen_n = jax.lax.stop_gradient(n)
    frozen_q = jax.lax.stop_gradient(quadratic)

    def frozen_log_prob(s):
        return jax.lax.stop_gradient(log_prob(s))


    # The zoom is unrolled in Python: a data-dependent loop here would sit inside the
    # L-BFGS while_loop when fitting, and nested loops of that kind stall XLA on CPU.
    for _ in range(ZOOM_STAGES):
        t = jnp.linspace(lower, upper, num_nodes, dtype=dtype)
        g = log_posterior_kernel(frozen_log_prob, t, frozen_n, frozen_q)
        lower, upper = _region_above_threshold(t, g)

    t = jax.lax.stop_gradient(jnp.linspace(lower, upper, num_nodes, dtype=dtype))
    step = t[1] - t[0]
    g = log_posterior_kernel(log_prob, t, n, quadratic)
    g = jnp.where(jnp.isfinite(g), g, -jnp.inf)
    trapezoid = jnp.ones(num_nodes, dtype).at[0].set(0.5).at[-1].set(0.5)
    log_terms = g + jnp.log(trapezoid * step)
    log_evidence = logsumexp(log_terms)
    return ScaleNodes(t, log_terms - log_evidence, log_evidence)


def scale_importance_sampling(key, prior: dist.Distribution, n, quadratic, num_samples: int = 4096) -> ScaleNodes:
    """Self-normalised importance sampling with the prior as proposal.

    Draws ``s_i ~ p(s)`` and weights them by ``exp(-n/2 log s_i - q / (2 s_i))``. With a
    fixed ``key`` the draws are common random numbers, so the estimate is a smooth
    function of the hyperparameters and can be optimised. Draws are made in ``log s``
    through the prior's sampler.
    """
    draws = prior.sample(key, (num_samples,))
    t = jnp.log(jnp.asarray(draws, jnp.result_type(quadratic, float)))
    log_likelihood = -0.5 * n * t - 0.5 * quadratic * jnp.exp(-t)
    log_likelihood = jnp.where(jnp.isfinite(log_likelihood), log_likelihood, -jnp.inf)
    log_evidence = logsumexp(log_likelihood) - jnp.log(num_samples)
    log_weights = log_likelihood - logsumexp(log_likelihood)
    return ScaleNodes(t, log_weights, log_evidence)


def gaussian_scale_mixture(mean, variance, nodes: ScaleNodes) -> dist.MixtureSameFamily:
    """Mixture over ``s`` of ``N(mean, s * variance)``, batch shape that of ``mean``.

    Each point's components share the mixing weights of ``nodes``.
    """
    mean = jnp.asarray(mean)
    batch_shape = mean.shape
    logits = jnp.broadcast_to(nodes.log_weights, batch_shape + nodes.log_weights.shape)
    scales = jnp.sqrt(jnp.asarray(variance)[..., None] * jnp.exp(nodes.log_scales))
    components = dist.Normal(jnp.broadcast_to(mean[..., None], scales.shape), scales)
    return dist.MixtureSameFamily(dist.Categorical(logits=logits), components)
