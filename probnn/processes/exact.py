r"""Exact Gaussian and Student-t process regression.

Both models share one algebra. With training inputs ``X``, targets ``y`` (standardised
internally), kernel ``k`` and noise variance :math:`\epsilon`, let
:math:`A = k(X, X) + \epsilon I` with Cholesky factor ``L``, :math:`a = A^{-1} y` and
:math:`q = y^\top A^{-1} y`. At new inputs the Gaussian process predicts

.. math::

    \mu_* = k_*^\top a, \qquad \sigma_*^2 = k_{**} - k_*^\top A^{-1} k_* \; (+\, \epsilon).

The Student-t process is the scale mixture ``y | s ~ N(0, s A)`` with
``s ~ InvGamma(alpha, beta)`` on the last-layer variance (Shah, Wilson and Ghahramani,
AISTATS 2014; Lee, Yun, Yang and Lee, ICLR 2022). Integrating ``s`` out gives a
multivariate Student-t marginal with ``2 alpha`` degrees of freedom and shape
``(beta / alpha) A``; the posterior of ``s`` is ``InvGamma(alpha + n/2, beta + q/2)``, and
the predictive is Student-t with ``2 alpha + n`` degrees of freedom, location
:math:`\mu_*` and squared scale :math:`\sigma_*^2 (2\beta + q) / (2\alpha + n)`.

A fixed mean function ``m`` (``mean_function=``, typically a trained
:class:`probnn.nets.MLP`) makes the process model the residuals: the prior is
``f ~ GP(m, k)``, so ``y - m(X)`` is standardised and conditioned on as above, and
``m(x_*)`` is added back to every prediction. Because the residuals are standardised by
their own sample mean ``c``, the effective prior mean is ``m(x) + c``.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import scipy.special
from jax.scipy.special import gammaln
from jaxtyping import Array, Float

from probnn.kernels.base import Kernel, _log_normal_log_density, positive_array
from probnn.kernels.linalg import (
    CholeskyResult,
    blocked_cholesky,
    NumericalWarning,
    cho_solve,
    factor_is_usable,
    factor_with_jitter,
    jitter_levels,
    gaussian_log_det_and_quadratic,
    log_det_from_cholesky,
    report_cholesky,
    solve_triangular_lower,
)
from probnn.processes._data import (
    PaddedData,
    Standardizer,
    check_test_inputs,
    check_training_data,
    float_dtype,
    masked_covariance,
    pad_training_data,
    warn_precision,
)
from probnn.processes._optimize import minimize_restarts, to_constrained, to_unconstrained
from probnn.sharding import batch_sharding, shard_batch

#: Default lower bound on the noise variance, on the standardised target scale.
NOISE_LOWER_BOUND = 1e-6

#: Padded training sets larger than this are conditioned through a row-blocked Gram
#: matrix factorised in place (:meth:`_ExactProcess._condition_blocked`): one ``N x N``
#: matrix in memory, about 3.4 GB in float64 at 20,480.
BLOCKED_ABOVE = 4096

#: Rows of the Gram matrix computed at a time on the blocked path.
GRAM_BLOCK_ROWS = 1024


class StudentTPredictive(dist.StudentT):
    """numpyro ``StudentT`` whose ``variance`` rejects degrees of freedom at or below 2.

    numpyro returns infinity or NaN there; a predictive variance that does not exist is
    better reported than propagated. Under ``jit`` the check is skipped.
    """

    @property
    def variance(self):
        df = self.df
        if not isinstance(df, jax.core.Tracer) and bool(jnp.any(jnp.asarray(df) <= 2.0)):
            raise ValueError(
                f"The Student-t predictive has {float(jnp.min(df)):.3g} degrees of freedom, so its "
                "variance is infinite. Use a prior with alpha > 1 (degrees of freedom 2 alpha + n > 2), "
                "or use quantiles (icdf) instead of the variance."
            )
        return super().variance

    def icdf(self, q):
        """Quantile function, by SciPy's ``stdtrit`` through a host callback.

        numpyro's own Student-t quantile needs TensorFlow Probability; this one works under
        ``jit`` but is not differentiable.
        """
        df, q = jnp.broadcast_arrays(jnp.asarray(self.df), jnp.asarray(q, dtype=jnp.result_type(self.loc)))
        shape = jax.ShapeDtypeStruct(jnp.broadcast_shapes(df.shape, q.shape), q.dtype)

        def standard_quantile(df, q):
            return np.asarray(scipy.special.stdtrit(np.asarray(df), np.asarray(q)), dtype=q.dtype)

        z = jax.pure_callback(standard_quantile, shape, df, q, vmap_method="broadcast_all")
        return self.loc + self.scale * z


class _ExactProcess(eqx.Module):
    """Shared fitting and conditioning of :class:`GaussianProcess` and :class:`StudentTProcess`."""

    kernel: Kernel
    noise: Float[Array, ""]
    mean_function: Callable | None
    learn_noise: bool = eqx.field(static=True)
    noise_lower_bound: float = eqx.field(static=True)
    num_restarts: int = eqx.field(static=True)
    max_iterations: int = eqx.field(static=True)
    hyperprior: bool = eqx.field(static=True)

    def _init_common(self, kernel, noise, noise_lower_bound, num_restarts, max_iterations, hyperprior, mean_function=None):
        if not isinstance(kernel, Kernel):
            raise ValueError(
                f"kernel must be a probnn.kernels.Kernel such as NNGP() or RBF(), got {type(kernel).__name__}."
            )
        if mean_function is not None and not callable(mean_function):
            raise ValueError(
                "mean_function must be a callable f(X) -> (n,), such as a trained probnn.nets.MLP, "
                f"or None; got {type(mean_function).__name__}."
            )
        self.mean_function = mean_function
        if not (np.isfinite(noise_lower_bound) and noise_lower_bound >= 0):
            raise ValueError(f"noise_lower_bound must be finite and >= 0, got {noise_lower_bound!r}.")
        if isinstance(num_restarts, bool) or not isinstance(num_restarts, int) or num_restarts < 1:
            raise ValueError(f"num_restarts must be a positive integer, got {num_restarts!r}.")
        if isinstance(max_iterations, bool) or not isinstance(max_iterations, int) or max_iterations < 1:
            raise ValueError(f"max_iterations must be a positive integer, got {max_iterations!r}.")
        self.kernel = kernel
        self.learn_noise = noise is None
        self.noise_lower_bound = float(noise_lower_bound)
        if noise is None:
            noise_value = max(1e-2, 10.0 * noise_lower_bound)
        else:
            noise_value = float(noise)
            if not np.isfinite(noise_value) or noise_value < 0:
                raise ValueError(f"noise must be a finite variance >= 0 or None (learned), got {noise!r}.")
            if noise_value < noise_lower_bound:
                warnings.warn(
                    f"noise={noise_value!r} is below noise_lower_bound={noise_lower_bound!r}; using "
                    f"{noise_lower_bound!r}. Pass noise_lower_bound=0.0 to fit without noise "
                    "(the Cholesky factorisation then adds jitter where needed).",
                    NumericalWarning,
                    stacklevel=3,
                )
                noise_value = noise_lower_bound
        self.noise = jnp.asarray(noise_value, dtype=float_dtype())
        self.num_restarts = num_restarts
        self.max_iterations = max_iterations
        self.hyperprior = bool(hyperprior)

    # -- hyperparameters -------------------------------------------------------------

    def _kernel_filter(self):
        """Pytree of booleans marking the kernel leaves that fitting changes."""
        return jax.tree.map(eqx.is_inexact_array, self.kernel)

    def _hyperparameters(self) -> dict:
        """Return the learned hyperparameters as a dict pytree of constrained values."""
        trainable, _ = eqx.partition(self.kernel, self._kernel_filter())
        theta = {"kernel": trainable}
        if self.learn_noise:
            theta["noise"] = self.noise
        return theta

    def _lower_bounds(self, theta: dict) -> dict:
        bounds = jax.tree.map(lambda _: 0.0, theta)
        if "noise" in theta:
            bounds["noise"] = self.noise_lower_bound
        return bounds

    def _with_hyperparameters(self, theta: dict):
        _, static = eqx.partition(self.kernel, self._kernel_filter())
        model = eqx.tree_at(lambda m: m.kernel, self, eqx.combine(theta["kernel"], static))
        if "noise" in theta:
            model = eqx.tree_at(lambda m: m.noise, model, theta["noise"])
        return model

    def log_hyperprior(self) -> Array:
        """Log density of the weak hyperprior added to the marginal likelihood when fitting.

        The kernel's own :meth:`~probnn.kernels.Kernel.log_prior`, plus
        ``log noise ~ N(-4, 1)`` on the standardised scale when the noise is learned.
        """
        total = self.kernel.log_prior()
        if self.learn_noise:
            total = total + _log_normal_log_density(jnp.log(self.noise), -4.0, 1.0)
        return total

    # -- the mean function -----------------------------------------------------------

    def _mean_values(self, X: np.ndarray) -> np.ndarray:
        """Evaluate the mean function at training inputs, checking its output, before any jit."""
        if self.mean_function is None:
            return np.zeros(X.shape[0])
        values = np.asarray(self.mean_function(jnp.asarray(X, float_dtype())), dtype=np.float64)
        if values.shape != (X.shape[0],):
            raise ValueError(
                f"mean_function returned shape {values.shape} for X of shape {X.shape}; it must return "
                f"one value per row, shape ({X.shape[0]},). A network with out_features=1 returns (n, 1): "
                "build it with out_features=None."
            )
        if not np.all(np.isfinite(values)):
            rows = np.nonzero(~np.isfinite(values))[0][:5].tolist()
            raise ValueError(f"mean_function returned NaN or infinite values at rows {rows} of X.")
        return values

    # -- the algebra -----------------------------------------------------------------

    def _noisy_gram(self, data: PaddedData):
        K = self.kernel.gram(data.X)
        K = K + self.noise * jnp.eye(K.shape[0], dtype=K.dtype)
        return masked_covariance(K, data.mask)

    def _log_marginal(self, log_det, quadratic, n):
        """Log marginal likelihood from ``log|A|`` and ``q = y^T A^{-1} y`` (standardised scale)."""
        raise NotImplementedError

    def _log_marginal_from(self, L, y, n):
        z = solve_triangular_lower(L, y)
        return self._log_marginal(log_det_from_cholesky(L), jnp.dot(z, z), n)

    def _objective(self, data: PaddedData):
        """Negative log marginal likelihood (plus hyperprior) per training point."""
        log_det, quadratic = gaussian_log_det_and_quadratic(self._noisy_gram(data), data.y)
        value = self._log_marginal(log_det, quadratic, data.n)
        if self.hyperprior:
            value = value + self.log_hyperprior()
        return -value / jnp.maximum(data.n, 1.0)

    def log_marginal_likelihood(self, X, y) -> Array:
        """Log marginal likelihood of ``y`` at ``X`` under the current hyperparameters.

        No standardisation is applied: this is the density of ``y`` exactly as given. With a
        mean function ``m`` it is computed as the density of the residuals ``y - m(X)``
        under the zero-mean process, which is the same number.
        """
        X, y = check_training_data(X, y)
        data = pad_training_data(X, y - self._mean_values(X))
        return _log_marginal_program(self, data)

    # -- fitting and conditioning ----------------------------------------------------

    def fit(self, X, y, *, key=None, num_restarts: int | None = None):
        """Fit hyperparameters by the (penalised) marginal likelihood and condition on the data.

        Targets, minus the mean function if there is one, are standardised, and the posterior
        predicts on the original scale. The objective is maximised by L-BFGS over
        unconstrained hyperparameters (``log(value - lower_bound)``) from ``num_restarts``
        starts: the current values and ``num_restarts - 1`` random perturbations drawn with
        ``key``, all run as one vectorised program. With no data, or constant targets, the hyperparameters are kept.

        Parameters
        ----------
        X : array of shape (n, d) or (n,)
        y : array of shape (n,) or (n, 1)
        key : jax.random key
            Needed when ``num_restarts > 1``.
        num_restarts : int, optional
            Overrides the model's ``num_restarts`` for this call, e.g. ``1`` to only refine
            the current hyperparameters, as a BO loop does between full refits.

        Returns
        -------
        posterior
            An immutable pytree with ``predict`` and ``sample_functions``.
        """
        X, y = check_training_data(X, y)
        warn_precision(X, y)
        y = y - self._mean_values(X)
        standardizer = Standardizer.fit(y)
        data = pad_training_data(X, (y - standardizer.mean) / standardizer.scale)
        model = self.with_input_dim(X.shape[1])
        restarts = self.num_restarts if num_restarts is None else num_restarts
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
            raise ValueError(f"num_restarts must be a positive integer, got {restarts!r}.")
        if X.shape[0] > 0 and not standardizer.constant:
            if restarts > 1 and key is None:
                raise ValueError(
                    f"fit needs key=jax.random.key(seed) for the {restarts - 1} random "
                    "restarts; pass a key, or num_restarts=1."
                )
            model = model._optimize(data, key, restarts)
        return model._condition(data, standardizer)

    def condition(self, X, y):
        """Condition on data with the current hyperparameters, without fitting them."""
        X, y = check_training_data(X, y)
        warn_precision(X, y)
        y = y - self._mean_values(X)
        standardizer = Standardizer.fit(y)
        data = pad_training_data(X, (y - standardizer.mean) / standardizer.scale)
        return self.with_input_dim(X.shape[1])._condition(data, standardizer)

    def with_input_dim(self, dim: int):
        """Return a copy whose kernel has one lengthscale per input dimension where it has any."""
        return eqx.tree_at(lambda m: m.kernel, self, self.kernel.with_input_dim(dim))

    def _optimize(self, data: PaddedData, key, num_restarts: int):
        theta = self._hyperparameters()
        bounds = self._lower_bounds(theta)
        u_init = jax.tree.map(to_unconstrained, theta, bounds)
        if not all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(u_init)):
            raise ValueError("Initial hyperparameters must lie strictly above their lower bounds.")
        leaves, treedef = jax.tree.flatten(u_init)
        if num_restarts > 1:
            keys = jax.random.split(key, len(leaves))
            starts = []
            for leaf, leaf_key in zip(leaves, keys):
                noise = jax.random.normal(leaf_key, (num_restarts - 1,) + leaf.shape, leaf.dtype)
                starts.append(jnp.concatenate([leaf[None], leaf[None] + noise]))
        else:
            starts = [leaf[None] for leaf in leaves]
        u0_batch = jax.tree.unflatten(treedef, starts)
        u_best, best_loss = _fit_program(self, u0_batch, data)
        if not np.isfinite(float(best_loss)):
            warnings.warn(
                "Hyperparameter fitting found no finite marginal likelihood; keeping the initial "
                "values. Check the data for duplicates without noise, or raise noise_lower_bound.",
                NumericalWarning,
                stacklevel=3,
            )
            return self
        return self._with_hyperparameters(jax.tree.map(to_constrained, u_best, bounds))

    def _condition(self, data: PaddedData, standardizer: Standardizer):
        if data.X.shape[0] > BLOCKED_ABOVE:
            result, solved, quadratic = self._condition_blocked(data)
        else:
            result, solved, quadratic = _condition_program(self, data)
        report_cholesky(result, "the training covariance k(X, X) + noise * I")
        dtype = float_dtype()
        return self._posterior_class(
            model=self,
            data=data,
            cholesky_factor=result.factor,
            solved=solved,
            quadratic=quadratic,
            y_mean=jnp.asarray(standardizer.mean, dtype),
            y_scale=jnp.asarray(standardizer.scale, dtype),
            **self._posterior_kwargs(data, quadratic),
        )

    def _posterior_kwargs(self, data: PaddedData, quadratic) -> dict:
        """Extra fields of the posterior beyond the factorised training data."""
        return {}

    def _condition_blocked(self, data: PaddedData, block_rows: int = GRAM_BLOCK_ROWS):
        """Factorise the training covariance holding one ``N x N`` matrix at a time.

        The Gram matrix is filled in blocks of ``block_rows`` rows, so the kernel's
        elementwise temporaries are ``block_rows x N``, and it is factorised in place by
        :func:`~probnn.kernels.linalg.blocked_cholesky`. When
        the factor is unusable the next jitter level of :func:`factor_with_jitter` is tried
        by rebuilding the matrix, which costs time but no memory.
        """
        scale = float(_diagonal_scale_program(self, data))
        factor = None
        for jitter in jitter_levels(scale, data.X.dtype):
            factor = None  # drop a failed factor before the next one is built
            factor, ok = _blocked_factor_program(self, data, jnp.asarray(jitter, data.X.dtype), block_rows)
            if bool(ok):
                break
        result = CholeskyResult(factor, jnp.asarray(jitter, data.X.dtype), ok)
        solved, quadratic = _solve_program(factor, data.y)
        return result, solved, quadratic


def _fit_loss(model: _ExactProcess, data: PaddedData):
    theta = model._hyperparameters()
    bounds = model._lower_bounds(theta)

    def loss(u):
        constrained = jax.tree.map(to_constrained, u, bounds)
        return model._with_hyperparameters(constrained)._objective(data)

    return loss


@eqx.filter_jit
def _fit_program(model: _ExactProcess, u0_batch, data: PaddedData):
    loss = _fit_loss(model, data)
    u_best, best_loss, _ = minimize_restarts(loss, u0_batch, max_iterations=model.max_iterations)
    return u_best, best_loss


@eqx.filter_jit
def _log_marginal_program(model: _ExactProcess, data: PaddedData):
    L = factor_with_jitter(model._noisy_gram(data)).factor
    return model._log_marginal_from(L, data.y, data.n)


def blocked_noisy_gram(kernel: Kernel, data: PaddedData, noise, jitter, block_rows: int):
    """``k(X, X) + noise I`` with padded rows masked out, plus ``jitter I``, filled ``block_rows`` rows at a time.

    Equal to ``masked_covariance(k(X, X) + noise I, mask) + jitter I`` up to rounding,
    without the ``N x N`` temporaries of the kernel's elementwise recursion. ``block_rows``
    is reduced to a divisor of ``N``. With several devices whose number divides the number
    of blocks, each device fills its own share of the row blocks
    (:func:`probnn.sharding.shard_batch`).
    """
    size = data.X.shape[0]
    block_rows = math.gcd(size, block_rows)
    positions = jnp.arange(size)

    def row_block(start):
        rows = jax.lax.dynamic_slice_in_dim(data.X, start, block_rows)
        row_mask = jax.lax.dynamic_slice_in_dim(data.mask, start, block_rows)
        block = jnp.where(row_mask[:, None] & data.mask[None, :], kernel.cross(rows, data.X), 0.0)
        # Real rows get the noise on the diagonal and padded rows a one, as masked_covariance does.
        diagonal = jnp.where(row_mask, noise, 1.0) + jitter
        on_diagonal = (start + jnp.arange(block_rows))[:, None] == positions[None, :]
        return block + jnp.where(on_diagonal, diagonal[:, None], 0.0)

    starts = jnp.arange(0, size, block_rows)
    devices = len(jax.devices())
    if batch_sharding(devices) is not None and starts.shape[0] % devices == 0:
        # One group of row blocks per device, each group filled block by block.
        groups = shard_batch(starts.reshape(devices, -1))
        return jax.vmap(lambda group: jax.lax.map(row_block, group))(groups).reshape(size, size)
    return jax.lax.map(row_block, starts).reshape(size, size)


@eqx.filter_jit
def _diagonal_scale_program(model: _ExactProcess, data: PaddedData):
    diagonal = jnp.where(data.mask, model.kernel.diag(data.X) + model.noise, 1.0)
    return jnp.maximum(jnp.mean(jnp.abs(diagonal)), jnp.finfo(diagonal.dtype).tiny)


@eqx.filter_jit
def _blocked_factor_program(model: _ExactProcess, data: PaddedData, jitter, block_rows: int):
    A = blocked_noisy_gram(model.kernel, data, model.noise, jitter, block_rows)
    L = blocked_cholesky(A, block_rows)
    return L, factor_is_usable(L, _diagonal_scale_program(model, data))


# Solving in the same program as the factorisation made XLA keep a second N x N buffer.
@jax.jit
def _solve_program(L, y):
    solved = cho_solve(L, y)
    return solved, jnp.dot(y, solved)


@eqx.filter_jit
def _condition_program(model: _ExactProcess, data: PaddedData):
    result = factor_with_jitter(model._noisy_gram(data))
    solved = cho_solve(result.factor, data.y)
    return result, solved, jnp.dot(data.y, solved)


def prediction_offset(mean_function, y_mean, X_new):
    """Shift from the standardised scale back to the targets: ``y_mean`` plus ``m(X_new)`` if there is a mean function."""
    if mean_function is None:
        return y_mean
    values = mean_function(X_new)
    if values.shape != X_new.shape[:1]:
        raise ValueError(
            f"mean_function returned shape {values.shape} for X_new of shape {X_new.shape}; it "
            f"must return shape ({X_new.shape[0]},)."
        )
    return y_mean + values.astype(y_mean.dtype)


class ExactPosterior(eqx.Module):
    """Posterior of an exact process: the fitted model and the factorised training data.

    An immutable pytree, so it can be passed through ``jit`` and ``vmap``. Training data
    are padded to a bucket size (see ``mask``).
    """

    model: _ExactProcess
    data: PaddedData
    cholesky_factor: Float[Array, "N N"]
    solved: Float[Array, " N"]
    quadratic: Float[Array, ""]
    y_mean: Float[Array, ""]
    y_scale: Float[Array, ""]

    @property
    def num_data(self) -> int:
        """Number of real (unpadded) training points."""
        return int(self.data.n)

    @property
    def X(self) -> np.ndarray:
        """Training inputs without padding."""
        return np.asarray(self.data.X)[np.asarray(self.data.mask)]

    @property
    def y(self) -> np.ndarray:
        """Training targets on the original scale, without padding."""
        y = np.asarray(self.data.y)[np.asarray(self.data.mask)]
        return y * float(self.y_scale) + float(self.y_mean) + self.model._mean_values(self.X)

    def _offset(self, X_new):
        """Return the shift from the standardised scale back to the targets at ``X_new``.

        That is the residual mean plus the mean function, shape ``(m,)``, or the scalar
        target mean when there is no mean function.
        """
        return prediction_offset(self.model.mean_function, self.y_mean, X_new)

    def _check_test_inputs(self, X_new):
        return check_test_inputs(X_new, self.data.X.shape[1], self.data.X.dtype)

    def _latent_moments(self, X_new):
        """Standardised-scale mean and variance of the latent function at ``X_new``."""
        kernel = self.model.kernel
        cross = jnp.where(self.data.mask[:, None], kernel.cross(self.data.X, X_new), 0.0)
        mean = cross.T @ self.solved
        v = solve_triangular_lower(self.cholesky_factor, cross)
        variance = kernel.diag(X_new) - jnp.sum(v**2, axis=0)
        # Cancellation can make the difference slightly negative where the data pin the
        # function down; a variance is never below zero.
        return mean, jnp.maximum(variance, 0.0)

    def _moments(self, X_new, latent: bool):
        mean, variance = self._latent_moments(X_new)
        if not latent:
            variance = variance + self.model.noise
        tiny = jnp.finfo(variance.dtype).tiny
        return mean, jnp.maximum(variance, tiny)

    def predict(self, X_new, latent: bool = False):
        """Predictive distribution at ``X_new`` on the original target scale.

        Parameters
        ----------
        X_new : array of shape (m, d) or (m,)
        latent : bool
            If true, the distribution of the noise-free function value; otherwise of a new
            observation (noise included).

        Returns
        -------
        numpyro.distributions.Distribution
            Batch shape ``(m,)``.
        """
        raise NotImplementedError

    def sample_functions(self, key, X_new, num_samples: int) -> Array:
        """Draw joint samples of the latent function at ``X_new``, shape ``(num_samples, m)``."""
        raise NotImplementedError

    def _joint_latent(self, X_new):
        kernel = self.model.kernel
        cross = jnp.where(self.data.mask[:, None], kernel.cross(self.data.X, X_new), 0.0)
        mean = cross.T @ self.solved
        v = solve_triangular_lower(self.cholesky_factor, cross)
        covariance = kernel.gram(X_new) - v.T @ v
        return mean, 0.5 * (covariance + covariance.T)


@eqx.filter_jit
def _joint_program(posterior: ExactPosterior, X_new):
    mean, covariance = posterior._joint_latent(X_new)
    return mean, factor_with_jitter(covariance)


def _joint_factor(posterior: ExactPosterior, X_new):
    mean, result = _joint_program(posterior, X_new)
    report_cholesky(result, "the joint posterior covariance at X_new")
    return mean, result.factor


class GaussianPosterior(ExactPosterior):
    """Posterior of a :class:`GaussianProcess`; predictives are ``numpyro`` ``Normal``."""

    def predict(self, X_new, latent: bool = False) -> dist.Normal:
        X_new = self._check_test_inputs(X_new)
        mean, variance = self._moments(X_new, latent)
        return dist.Normal(mean * self.y_scale + self._offset(X_new), jnp.sqrt(variance) * self.y_scale)

    def sample_functions(self, key, X_new, num_samples: int) -> Array:
        X_new = self._check_test_inputs(X_new)
        mean, factor = _joint_factor(self, X_new)
        z = jax.random.normal(key, (num_samples, X_new.shape[0]), dtype=factor.dtype)
        return (mean + z @ factor.T) * self.y_scale + self._offset(X_new)

    def log_marginal_likelihood(self) -> Array:
        """Log marginal likelihood of the training targets on their original scale."""
        value = self.model._log_marginal_from(self.cholesky_factor, self.data.y, self.data.n)
        return value - self.data.n * jnp.log(self.y_scale)


class StudentTPosterior(ExactPosterior):
    """Posterior of a :class:`StudentTProcess`; predictives are Student-t."""

    @property
    def degrees_of_freedom(self) -> Array:
        """``2 alpha + n``."""
        return 2.0 * self.model.alpha + self.data.n

    @property
    def scale_factor(self) -> Array:
        """Posterior mean of ``s`` times ``(2 alpha + n - 2) / (2 alpha + n)``: ``(2 beta + q) / (2 alpha + n)``."""
        return (2.0 * self.model.beta + self.quadratic) / self.degrees_of_freedom

    def predict(self, X_new, latent: bool = False) -> StudentTPredictive:
        X_new = self._check_test_inputs(X_new)
        mean, variance = self._moments(X_new, latent)
        scale = jnp.sqrt(self.scale_factor * variance) * self.y_scale
        df = jnp.broadcast_to(self.degrees_of_freedom, mean.shape)
        return StudentTPredictive(df, mean * self.y_scale + self._offset(X_new), scale)

    def sample_functions(self, key, X_new, num_samples: int) -> Array:
        X_new = self._check_test_inputs(X_new)
        mean, factor = _joint_factor(self, X_new)
        normal_key, gamma_key = jax.random.split(key)
        z = jax.random.normal(normal_key, (num_samples, X_new.shape[0]), dtype=factor.dtype)
        # A multivariate Student-t is a Gaussian whose covariance is scaled by
        # g ~ InvGamma(df / 2, df / 2). Drawing g once per sample keeps each draw jointly t.
        df = self.degrees_of_freedom
        g = 1.0 / (jax.random.gamma(gamma_key, df / 2.0, (num_samples, 1), dtype=factor.dtype) / (df / 2.0))
        draws = mean + jnp.sqrt(g * self.scale_factor) * (z @ factor.T)
        return draws * self.y_scale + self._offset(X_new)

    def scale_posterior(self) -> dist.InverseGamma:
        """Posterior of the last-layer variance ``s``: ``InvGamma(alpha + n/2, beta + q/2)`` (standardised scale)."""
        return dist.InverseGamma(self.model.alpha + self.data.n / 2.0, self.model.beta + self.quadratic / 2.0)

    def log_marginal_likelihood(self) -> Array:
        """Log marginal likelihood of the training targets on their original scale."""
        value = self.model._log_marginal_from(self.cholesky_factor, self.data.y, self.data.n)
        return value - self.data.n * jnp.log(self.y_scale)


class GaussianProcess(_ExactProcess):
    """Exact Gaussian process regression.

    Parameters
    ----------
    kernel : probnn.kernels.Kernel
        Covariance function, e.g. ``NNGP(depth=3)`` for an infinitely wide network.
    noise : float or None
        Observation noise variance on the standardised scale; ``None`` learns it.
    noise_lower_bound : float
        Lower bound on the learned noise variance (standardised scale).
    num_restarts : int
        Number of L-BFGS starts when fitting.
    max_iterations : int
        L-BFGS iterations per start.
    hyperprior : bool
        Add the weak default hyperprior to the objective (MAP type-II); ``False`` maximises
        the marginal likelihood alone.
    mean_function : callable or None
        Fixed prior mean ``m(X) -> (n,)`` on the original target scale, e.g. a trained
        :class:`probnn.nets.MLP`; ``None`` (default) is the zero mean. Fitting never changes
        it. The process models ``y - m(X)`` (standardised by its own mean and standard
        deviation) and adds ``m`` back in predictions and function samples, so far from the
        data the posterior mean reverts to ``m(x)`` plus the mean residual.

    Examples
    --------
    >>> import jax, numpy as np
    >>> jax.config.update("jax_enable_x64", True)
    >>> from probnn.kernels import NNGP
    >>> X = np.linspace(0, 1, 20)[:, None]; y = np.sin(6 * X[:, 0])
    >>> posterior = GaussianProcess(NNGP(depth=3)).fit(X, y, key=jax.random.key(0))
    >>> posterior.predict(X[:3]).mean.shape
    (3,)
    """

    _posterior_class = GaussianPosterior

    def __init__(
        self,
        kernel: Kernel,
        noise: float | None = None,
        *,
        noise_lower_bound: float = NOISE_LOWER_BOUND,
        num_restarts: int = 4,
        max_iterations: int = 200,
        hyperprior: bool = True,
        mean_function: Callable | None = None,
    ):
        self._init_common(kernel, noise, noise_lower_bound, num_restarts, max_iterations, hyperprior, mean_function)

    def _log_marginal(self, log_det, quadratic, n):
        # Padded rows contribute log 1 = 0 to the determinant and 0 to the quadratic form.
        return -0.5 * quadratic - 0.5 * log_det - 0.5 * n * jnp.log(2.0 * jnp.pi)


class StudentTProcess(_ExactProcess):
    r"""Student-t process: the NNGP (or any kernel) with an inverse-gamma last-layer variance.

    ``y | s ~ N(0, s (K + noise I))`` with ``s ~ InvGamma(alpha, beta)``; see the module
    docstring for the closed forms. The kernel's own ``variance`` is held fixed (1 by
    default) because ``beta / alpha`` plays its role.

    Parameters
    ----------
    kernel : probnn.kernels.Kernel
    alpha, beta : float
        Inverse-gamma shape and scale; initial values when ``learn_scale_prior`` is true.
    learn_scale_prior : bool
        Fit ``alpha`` (kept above 1, so predictive variances exist) and ``beta`` by the
        marginal likelihood.
    noise, noise_lower_bound, num_restarts, max_iterations, hyperprior, mean_function
        As for :class:`GaussianProcess`.
    """

    alpha: Float[Array, ""]
    beta: Float[Array, ""]
    learn_scale_prior: bool = eqx.field(static=True)

    _posterior_class = StudentTPosterior

    def __init__(
        self,
        kernel: Kernel,
        alpha: float = 3.0,
        beta: float = 2.0,
        noise: float | None = None,
        *,
        learn_scale_prior: bool = True,
        noise_lower_bound: float = NOISE_LOWER_BOUND,
        num_restarts: int = 4,
        max_iterations: int = 200,
        hyperprior: bool = True,
        mean_function: Callable | None = None,
    ):
        self._init_common(kernel, noise, noise_lower_bound, num_restarts, max_iterations, hyperprior, mean_function)
        dtype = float_dtype()
        self.alpha = jnp.asarray(positive_array(alpha, "alpha"), dtype)
        self.beta = jnp.asarray(positive_array(beta, "beta"), dtype)
        if learn_scale_prior and float(alpha) <= 1.0:
            raise ValueError(
                f"alpha must be above 1 when it is learned (the predictive variance needs 2 alpha > 2), "
                f"got alpha={alpha!r}."
            )
        self.learn_scale_prior = bool(learn_scale_prior)

    def _kernel_filter(self):
        spec = super()._kernel_filter()
        return eqx.tree_at(lambda k: k.variance, spec, False)

    def _hyperparameters(self):
        theta = super()._hyperparameters()
        if self.learn_scale_prior:
            theta["alpha"] = self.alpha
            theta["beta"] = self.beta
        return theta

    def _lower_bounds(self, theta):
        bounds = super()._lower_bounds(theta)
        if "alpha" in theta:
            bounds["alpha"] = 1.0
        return bounds

    def _with_hyperparameters(self, theta):
        model = super()._with_hyperparameters(theta)
        if "alpha" in theta:
            model = eqx.tree_at(lambda m: (m.alpha, m.beta), model, (theta["alpha"], theta["beta"]))
        return model

    def log_hyperprior(self):
        """Kernel and noise hyperpriors plus ``log(alpha - 1) ~ N(log 2, 1.5^2)`` and ``log beta ~ N(log 2, 1.5^2)``."""
        total = super().log_hyperprior()
        if self.learn_scale_prior:
            total = total + _log_normal_log_density(jnp.log(self.alpha - 1.0), jnp.log(2.0), 1.5)
            total = total + _log_normal_log_density(jnp.log(self.beta), jnp.log(2.0), 1.5)
        return total

    def _log_marginal(self, log_det, quadratic, n):
        # Multivariate t with 2 alpha degrees of freedom and shape (beta / alpha) A:
        # log G(alpha + n/2) - log G(alpha) - n/2 log(2 pi beta) - 1/2 log|A|
        #   - (alpha + n/2) log(1 + q / (2 beta)).
        alpha, beta = self.alpha, self.beta
        return (
            gammaln(alpha + 0.5 * n)
            - gammaln(alpha)
            - 0.5 * n * jnp.log(2.0 * jnp.pi * beta)
            - 0.5 * log_det
            - (alpha + 0.5 * n) * jnp.log1p(quadratic / (2.0 * beta))
        )
