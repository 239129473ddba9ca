r"""Scale mixtures of Gaussian processes, with any positive prior on the last-layer variance.

An infinitely wide network whose last-layer weight variance is ``s`` has the NNGP prior
``f | s ~ GP(0, s k)``. Lee, Yun, Yang and Lee ("Scale Mixtures of Neural Network Gaussian
Processes", ICLR 2022) put a prior ``p(s)`` on that variance. With noise variance
:math:`\epsilon` on the same scale, the model is

.. math::

    y \mid s \sim \mathcal N\big(0, s (K + \epsilon I)\big), \qquad s \sim p(s).

Given ``s`` everything is Gaussian, so with ``A = K + eps I`` and ``q = y^T A^{-1} y`` the
posterior of ``s`` is one-dimensional (see :mod:`probnn.samplers.scale`) and the predictive at
a new input is a scale mixture of the Gaussian predictives,

.. math::

    p(y_* \mid y) = \int \mathcal N\big(y_*; \mu_*, s \sigma_*^2\big)\, p(s \mid y)\, ds,

with the usual GP mean :math:`\mu_*` and variance :math:`\sigma_*^2` of ``A``. An
inverse-gamma prior gives the Student-t process; Burr type XII or half-Cauchy priors give
heavier tails.
"""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints

from probnn.kernels.base import Kernel, _log_normal_log_density
from probnn.priors.scale import check_scale_prior, prior_parameters, rebuild_prior
from probnn.processes._data import PaddedData, float_dtype
from probnn.processes.exact import NOISE_LOWER_BOUND, ExactPosterior, _ExactProcess, _joint_factor
from probnn.samplers.scale import (
    ScaleNodes,
    gaussian_scale_mixture,
    scale_importance_sampling,
    scale_quadrature,
)

#: Ways to integrate over the scale.
INFERENCE_METHODS = ("quadrature", "importance")


def _parameter_lower_bound(constraint) -> float | None:
    """Lower bound for fitting a prior parameter, ``-inf`` for real ones, ``None`` if unsupported."""
    if constraint is constraints.real:
        return -np.inf
    if isinstance(constraint, constraints._GreaterThan) and not isinstance(constraint, constraints._Interval):
        return float(constraint.lower_bound)
    return None


class ScaleMixturePosterior(ExactPosterior):
    """Posterior of a :class:`ScaleMixtureProcess`.

    Predictives are ``numpyro`` ``MixtureSameFamily`` distributions of Gaussians, one
    component per node of the scale posterior (``scale_nodes``).
    """

    scale_nodes: ScaleNodes

    def predict(self, X_new, latent: bool = False) -> dist.MixtureSameFamily:
        """Predictive distribution at ``X_new`` on the original target scale.

        Parameters
        ----------
        X_new : array of shape (m, d) or (m,)
        latent : bool
            If true, the distribution of the noise-free function value; otherwise of a new
            observation (noise included, scaled by ``s`` like the kernel).

        Returns
        -------
        numpyro.distributions.MixtureSameFamily
            Batch shape ``(m,)``, with ``K`` Gaussian components per point.
        """
        X_new = self._check_test_inputs(X_new)
        mean, variance = self._moments(X_new, latent)
        mean = mean * self.y_scale + self.y_mean
        return gaussian_scale_mixture(mean, variance * self.y_scale**2, self.scale_nodes)

    def sample_functions(self, key, X_new, num_samples: int) -> jax.Array:
        """Draw joint samples of the latent function at ``X_new``, shape ``(num_samples, m)``.

        Each sample draws one scale from the posterior nodes and then a Gaussian path.
        """
        X_new = self._check_test_inputs(X_new)
        mean, factor = _joint_factor(self, X_new)
        node_key, normal_key = jax.random.split(key)
        index = jax.random.categorical(node_key, self.scale_nodes.log_weights, shape=(num_samples,))
        scales = jnp.exp(0.5 * self.scale_nodes.log_scales[index])[:, None]
        z = jax.random.normal(normal_key, (num_samples, X_new.shape[0]), dtype=factor.dtype)
        draws = mean + scales * (z @ factor.T)
        return draws * self.y_scale + self.y_mean

    def scale_posterior(self) -> dist.MixtureSameFamily:
        """Posterior of ``log s`` on the standardised scale, as a mixture of narrow Gaussians at the nodes.

        The nodes and weights themselves are ``scale_nodes``; its ``mean()`` is the
        posterior mean of ``s``.
        """
        nodes = self.scale_nodes
        spacing = jnp.maximum(jnp.abs(nodes.log_scales[1] - nodes.log_scales[0]), 1e-12)
        width = jnp.full_like(nodes.log_scales, spacing)
        return dist.MixtureSameFamily(
            dist.Categorical(logits=nodes.log_weights), dist.Normal(nodes.log_scales, width)
        )

    def log_marginal_likelihood(self) -> jax.Array:
        """Log marginal likelihood of the training targets on their original scale."""
        value = self.model._log_marginal_from(self.cholesky_factor, self.data.y, self.data.n)
        return value - self.data.n * jnp.log(self.y_scale)


class ScaleMixtureProcess(_ExactProcess):
    r"""Gaussian process whose last-layer variance ``s`` has a prior: ``y | s ~ N(0, s (K + eps I))``.

    Parameters
    ----------
    kernel : probnn.kernels.Kernel
        Covariance function, e.g. ``NNGP(depth=3)``. Its ``variance`` is held at its
        value (1 by default), because the prior on ``s`` plays its role.
    scale_prior : numpyro.distributions.Distribution
        Any scalar distribution on the positive half-line: ``InverseGamma`` (Student-t
        process), :class:`probnn.priors.BurrXII`, ``HalfCauchy``, ``LogNormal``, ...
    noise : float or None
        Noise variance ``eps`` relative to the kernel, on the standardised target scale;
        ``None`` learns it.
    learn_scale_prior : bool
        Fit the prior's parameters by the marginal likelihood together with the kernel's.
        Parameters with interval constraints are kept fixed.
    inference : {"quadrature", "importance"}
        How to integrate over ``s``: the trapezoid rule on an adaptive grid in ``log s``
        (deterministic, accurate to double precision for smooth priors) or
        self-normalised importance sampling with the prior as proposal.
    num_nodes : int
        Quadrature nodes, i.e. mixture components of the predictive.
    num_importance_samples : int
        Prior draws for ``inference="importance"``.
    importance_seed : int
        Seed of those draws. They stay fixed, so the fitting objective is deterministic.
    noise_lower_bound, num_restarts, max_iterations, hyperprior
        As for :class:`~probnn.processes.GaussianProcess`.

    Examples
    --------
    >>> import jax, numpy as np
    >>> jax.config.update("jax_enable_x64", True)
    >>> from probnn.kernels import NNGP
    >>> from probnn.priors import BurrXII
    >>> X = np.linspace(0, 1, 20)[:, None]; y = np.sin(6 * X[:, 0])
    >>> model = ScaleMixtureProcess(NNGP(depth=3), BurrXII(2.0, 2.0))
    >>> posterior = model.fit(X, y, key=jax.random.key(0))
    >>> posterior.predict(X[:3]).mean.shape
    (3,)
    """

    scale_prior: dist.Distribution
    prior_reference: dict
    learn_scale_prior: bool = eqx.field(static=True)
    inference: str = eqx.field(static=True)
    num_nodes: int = eqx.field(static=True)
    num_importance_samples: int = eqx.field(static=True)
    importance_key: jax.Array

    _posterior_class = ScaleMixturePosterior

    def __init__(
        self,
        kernel: Kernel,
        scale_prior: dist.Distribution,
        noise: float | None = None,
        *,
        learn_scale_prior: bool = True,
        inference: str = "quadrature",
        num_nodes: int = 128,
        num_importance_samples: int = 4096,
        importance_seed: int = 0,
        noise_lower_bound: float = NOISE_LOWER_BOUND,
        num_restarts: int = 4,
        max_iterations: int = 200,
        hyperprior: bool = True,
    ):
        self._init_common(kernel, noise, noise_lower_bound, num_restarts, max_iterations, hyperprior)
        prior = check_scale_prior(scale_prior)
        dtype = float_dtype()
        parameters = {name: jnp.asarray(value, dtype) for name, value in prior_parameters(prior).items()}
        self.scale_prior = rebuild_prior(prior, parameters)
        # The hyperprior of the learned prior parameters is centred on the values given here.
        # Fitting never changes this copy, so repeated refits keep the same centre.
        self.prior_reference = dict(parameters)
        if inference not in INFERENCE_METHODS:
            raise ValueError(f"inference must be one of {INFERENCE_METHODS}, got {inference!r}.")
        for name, value, minimum in (("num_nodes", num_nodes, 8), ("num_importance_samples", num_importance_samples, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
        self.learn_scale_prior = bool(learn_scale_prior)
        self.inference = inference
        self.num_nodes = num_nodes
        self.num_importance_samples = num_importance_samples
        self.importance_key = jax.random.key(int(importance_seed))

    # -- hyperparameters -------------------------------------------------------------

    def _kernel_filter(self):
        spec = super()._kernel_filter()
        return eqx.tree_at(lambda k: k.variance, spec, False)

    def _learned_prior_bounds(self) -> dict:
        """Lower bounds of the prior parameters that fitting changes."""
        if not self.learn_scale_prior:
            return {}
        bounds = {}
        for name, constraint in self.scale_prior.arg_constraints.items():
            lower = _parameter_lower_bound(constraint)
            if lower is not None:
                bounds[name] = lower
        return bounds

    def _hyperparameters(self):
        theta = super()._hyperparameters()
        bounds = self._learned_prior_bounds()
        if bounds:
            parameters = prior_parameters(self.scale_prior)
            theta["prior"] = {name: parameters[name] for name in bounds}
        return theta

    def _lower_bounds(self, theta):
        result = super()._lower_bounds(theta)
        if "prior" in theta:
            result["prior"] = self._learned_prior_bounds()
        return result

    def _with_hyperparameters(self, theta):
        model = super()._with_hyperparameters(theta)
        if "prior" in theta:
            parameters = prior_parameters(self.scale_prior)
            parameters.update(theta["prior"])
            model = eqx.tree_at(lambda m: m.scale_prior, model, rebuild_prior(self.scale_prior, parameters))
        return model

    def log_hyperprior(self):
        """Kernel and noise hyperpriors plus priors on the learned prior parameters.

        A single draw of ``s`` underlies all the data, so the marginal likelihood pins down
        the scale but hardly the shape of its prior. The shape therefore stays near the
        values given at construction: ``log(value - lower) ~ N(log(initial - lower), 1)``
        for bounded parameters and ``value ~ N(initial, 1)`` for real ones.
        """
        total = super().log_hyperprior()
        parameters = prior_parameters(self.scale_prior)
        for name, lower in self._learned_prior_bounds().items():
            value, centre = parameters[name], self.prior_reference[name]
            if lower == -np.inf:
                total = total + dist.Normal(centre, 1.0).log_prob(value)
            else:
                total = total + _log_normal_log_density(jnp.log(value - lower), jnp.log(centre - lower), 1.0)
        return total

    # -- the algebra -----------------------------------------------------------------

    def _scale_nodes(self, quadratic, n) -> ScaleNodes:
        if self.inference == "quadrature":
            return scale_quadrature(self.scale_prior.log_prob, n, quadratic, self.num_nodes)
        return scale_importance_sampling(
            self.importance_key, self.scale_prior, n, quadratic, self.num_importance_samples
        )

    def _log_marginal(self, log_det, quadratic, n):
        nodes = self._scale_nodes(quadratic, n)
        return nodes.log_evidence - 0.5 * log_det - 0.5 * n * jnp.log(2.0 * jnp.pi)

    def _posterior_kwargs(self, data: PaddedData, quadratic) -> dict:
        return {"scale_nodes": self._checked_scale_nodes(quadratic, data.n)}

    def _checked_scale_nodes(self, quadratic, n) -> ScaleNodes:
        """Posterior nodes of ``s`` given ``q`` and ``n``, raising if no node has a finite weight."""
        nodes = _nodes_program(self, quadratic, n)
        if not bool(jnp.all(jnp.isfinite(nodes.log_scales))) or not bool(jnp.isfinite(nodes.log_evidence)):
            raise FloatingPointError(
                "The posterior of the last-layer variance has no finite weights: the prior "
                f"{self.scale_prior!r} gives zero density wherever the data put the scale. "
                "Choose a prior with more mass near the data's scale."
            )
        if self.inference == "importance":
            _warn_low_effective_sample_size(nodes, self.num_importance_samples)
        return nodes


@eqx.filter_jit
def _nodes_program(model: ScaleMixtureProcess, quadratic, n):
    return model._scale_nodes(quadratic, n)


def _warn_low_effective_sample_size(nodes: ScaleNodes, num_samples: int) -> None:
    ess = float(nodes.effective_sample_size())
    if ess < 100:
        warnings.warn(
            f"Importance sampling over the last-layer variance kept an effective sample size of "
            f"{ess:.1f} out of {num_samples} prior draws, so the predictive is noisy. Raise "
            "num_importance_samples or use inference='quadrature'.",
            RuntimeWarning,
            stacklevel=4,
        )
