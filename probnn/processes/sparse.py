r"""Inducing-point (sparse) Gaussian, Student-t and scale-mixture processes for large data.

With ``M`` inducing inputs ``Z``, the Nystrom approximation
:math:`Q = K_{XZ} K_{ZZ}^{-1} K_{ZX}` replaces the ``n x n`` kernel matrix. Titsias's
collapsed bound (AISTATS 2009) on the Gaussian marginal likelihood is

.. math::

    \log p(y) \ge \log \mathcal N(y; 0, Q + \epsilon I) - \frac{\operatorname{tr}(K - Q)}{2 \epsilon}.

For a scale mixture, ``y | s ~ N(0, s (K + eps I))``, the same bound is valid given ``s``
with kernel ``s K`` and noise ``s eps``, and its trace term
``tr(s K - s Q) / (2 s eps)`` does not depend on ``s``. Integrating the bound over the
prior of ``s`` therefore gives

.. math::

    \log p(y) \ge \log \int \mathcal N\big(y; 0, s (Q + \epsilon I)\big)\, p(s)\, ds
        - \frac{\operatorname{tr}(K - Q)}{2 \epsilon},

which is the exact process's log marginal likelihood with ``Q`` in place of ``K``, minus
the same trace term. So one formula serves :class:`~probnn.processes.GaussianProcess`,
:class:`~probnn.processes.StudentTProcess` and
:class:`~probnn.processes.ScaleMixtureProcess`: each supplies its marginal likelihood as a
function of ``log|Q + eps I|`` and ``q = y^T (Q + eps I)^{-1} y``, and the posterior of
``s`` is the exact one with that ``q``. Given ``s``, the predictive is Titsias's
(the DTC/SGPR predictive) with variance scaled by ``s``.

Everything costs ``O(n M^2)`` time and ``O(n M)`` memory. The kernel hyperparameters, the
noise, the process's own parameters and the inducing inputs are fitted together by L-BFGS
on the bound. ``Z`` starts at k-means centres, a k-center cover or a random subset of the
training inputs (:mod:`probnn.processes.inducing`).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, Float

from probnn.kernels.base import Kernel, check_inputs
from probnn.kernels.linalg import NumericalWarning, factor_with_jitter, report_cholesky, solve_triangular_lower
from probnn.processes._data import Standardizer, check_test_inputs, check_training_data, float_dtype, warn_precision
from probnn.processes._optimize import minimize_restarts, to_constrained, to_unconstrained
from probnn.processes.exact import (
    GaussianProcess,
    StudentTPredictive,
    StudentTProcess,
    _ExactProcess,
    prediction_offset,
)
from probnn.processes.inducing import check_inducing_init, initial_inducing_inputs
from probnn.processes.scale_mixture import ScaleMixtureProcess
from probnn.samplers.scale import ScaleNodes, gaussian_scale_mixture

#: Default number of inducing inputs.
DEFAULT_NUM_INDUCING = 512

#: Jitter on the diagonal of ``K_ZZ``, relative to its mean diagonal. It only makes ``Q``
#: smaller (inducing values observed with a little noise), so the bound stays a bound.
INDUCING_JITTER = 1e-6


class _CollapsedTerms(NamedTuple):
    """Cholesky factors and scalars of the collapsed bound at one set of hyperparameters."""

    kzz_factor: Array  # L with L L^T = K_ZZ + jitter I
    b_factor: Array  # L_B with L_B L_B^T = I + A A^T, A = L^{-1} K_ZX / sqrt(eps)
    projected: Array  # c = L_B^{-1} A y / sqrt(eps)
    log_det: Array  # log |Q + eps I|
    quadratic: Array  # y^T (Q + eps I)^{-1} y
    trace: Array  # tr(K - Q)


def _kzz(kernel: Kernel, Z):
    Kzz = kernel.gram(Z)
    scale = jnp.mean(jnp.diagonal(Kzz))
    return Kzz + INDUCING_JITTER * scale * jnp.eye(Z.shape[0], dtype=Kzz.dtype)


def _collapsed_terms(kernel: Kernel, noise, Z, X, y, kzz_factor=None) -> _CollapsedTerms:
    """Compute the terms of the bound in ``O(n M^2)``, by the Woodbury and determinant lemmas.

    ``(Q + eps I)^{-1} = (I - A^T B^{-1} A) / eps`` and ``|Q + eps I| = eps^n |B|`` with
    ``B = I + A A^T``.
    """
    n = X.shape[0]
    L = jnp.linalg.cholesky(_kzz(kernel, Z)) if kzz_factor is None else kzz_factor
    root_noise = jnp.sqrt(noise)
    # L^{-1} is formed (M x M) and multiplied in, rather than solving against the M x n
    # matrix K_ZX: the gradient of a triangular solve with that many right-hand sides ran
    # about three times slower on the CPU than that of the matrix product.
    L_inverse = solve_triangular_lower(L, jnp.eye(Z.shape[0], dtype=L.dtype))
    A = (L_inverse @ kernel.cross(Z, X)) / root_noise
    B = A @ A.T + jnp.eye(Z.shape[0], dtype=A.dtype)
    LB = jnp.linalg.cholesky(B)
    c = solve_triangular_lower(LB, A @ y) / root_noise
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(LB))) + n * jnp.log(noise)
    quadratic = jnp.dot(y, y) / noise - jnp.dot(c, c)
    # diag(Q) = eps * sum_m A_mi^2; clipping guards the rounding of a near-exact Nystrom fit.
    trace = jnp.maximum(jnp.sum(kernel.diag(X)) - noise * jnp.sum(A**2), 0.0)
    return _CollapsedTerms(L, LB, c, log_det, quadratic, trace)


class SparseProcess(eqx.Module):
    """Inducing-point approximation of an exact process, for data too large for ``O(n^3)``.

    Parameters
    ----------
    process : GaussianProcess, StudentTProcess or ScaleMixtureProcess
        The model to approximate. Its kernel, noise, priors, hyperprior, mean function and
        ``max_iterations`` are used as they are.
    num_inducing : int
        Number of inducing inputs ``M``. With no more than ``M`` training points the
        inducing inputs are the training inputs and the result is the exact posterior.
    inducing_init : {"kmeans", "kcenter", "random"}
        Initial inducing inputs; see :func:`probnn.processes.inducing.initial_inducing_inputs`.
    learn_inducing : bool
        Optimise the inducing inputs together with the hyperparameters.
    inducing_inputs : array of shape (M, d), optional
        Start from these inducing inputs instead of choosing them from the data.
    num_restarts : int
        L-BFGS starts; the first from the current values, the others with the process's
        hyperparameters perturbed (the inducing inputs always start where they are).

    Examples
    --------
    >>> import jax, numpy as np
    >>> jax.config.update("jax_enable_x64", True)
    >>> from probnn.kernels import NNGP
    >>> from probnn.processes import StudentTProcess
    >>> X = np.random.default_rng(0).uniform(size=(2000, 2)); y = np.sin(6 * X[:, 0])
    >>> sparse = SparseProcess(StudentTProcess(NNGP(depth=3)), num_inducing=64)
    >>> sparse.fit(X, y, key=jax.random.key(0)).predict(X[:3]).mean.shape
    (3,)
    """

    process: _ExactProcess
    inducing_inputs: Float[Array, "M d"] | None
    num_inducing: int = eqx.field(static=True)
    inducing_init: str = eqx.field(static=True)
    learn_inducing: bool = eqx.field(static=True)
    num_restarts: int = eqx.field(static=True)

    def __init__(
        self,
        process: _ExactProcess,
        num_inducing: int = DEFAULT_NUM_INDUCING,
        *,
        inducing_init: str = "kmeans",
        learn_inducing: bool = True,
        inducing_inputs=None,
        num_restarts: int = 1,
    ):
        if not isinstance(process, (GaussianProcess, StudentTProcess, ScaleMixtureProcess)):
            raise ValueError(
                "process must be a GaussianProcess, StudentTProcess or ScaleMixtureProcess, got "
                f"{type(process).__name__}."
            )
        for name, value in (("num_inducing", num_inducing), ("num_restarts", num_restarts)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.process = process
        self.num_inducing = num_inducing
        self.inducing_init = check_inducing_init(inducing_init)
        self.learn_inducing = bool(learn_inducing)
        self.num_restarts = num_restarts
        if inducing_inputs is not None:
            inducing_inputs = jnp.asarray(check_inputs(inducing_inputs, "inducing_inputs"), float_dtype())
        self.inducing_inputs = inducing_inputs

    # -- data and inducing inputs ----------------------------------------------------

    def _prepare(self, X, y):
        X, y = check_training_data(X, y)
        if X.shape[0] == 0:
            raise ValueError("A sparse process needs at least one training point; X has 0 rows.")
        warn_precision(X, y)
        y = y - self.process._mean_values(X)
        standardizer = Standardizer.fit(y)
        dtype = float_dtype()
        y_std = jnp.asarray((y - standardizer.mean) / standardizer.scale, dtype)
        return X, jnp.asarray(X, dtype), y_std, standardizer

    def _with_inducing(self, X: np.ndarray, key) -> "SparseProcess":
        """Copy with the kernel sized for ``X`` and inducing inputs chosen if there are none yet."""
        model = eqx.tree_at(lambda m: m.process, self, self.process.with_input_dim(X.shape[1]))
        Z = self.inducing_inputs
        if Z is not None and Z.shape[1] != X.shape[1]:
            raise ValueError(
                f"inducing_inputs have {Z.shape[1]} columns but X has {X.shape[1]}; pass inducing "
                "inputs with one column per feature, or none."
            )
        if Z is None:
            if X.shape[0] <= self.num_inducing:
                Z = X
            else:
                seed = 0 if key is None else int(jax.random.randint(key, (), 0, 2**31 - 1))
                Z = initial_inducing_inputs(X, self.num_inducing, self.inducing_init, seed)
            Z = jnp.asarray(Z, float_dtype())
        return eqx.tree_at(lambda m: m.inducing_inputs, model, Z, is_leaf=lambda x: x is None)

    # -- fitting -----------------------------------------------------------------------

    def _parameters(self) -> tuple[dict, dict]:
        theta = {"process": self.process._hyperparameters()}
        bounds = {"process": self.process._lower_bounds(theta["process"])}
        if self.learn_inducing:
            theta["inducing"] = self.inducing_inputs
            bounds["inducing"] = -np.inf
        return theta, bounds

    def _with_parameters(self, theta: dict) -> "SparseProcess":
        model = eqx.tree_at(lambda m: m.process, self, self.process._with_hyperparameters(theta["process"]))
        if "inducing" in theta:
            model = eqx.tree_at(lambda m: m.inducing_inputs, model, theta["inducing"])
        return model

    def _bound(self, X, y, kzz_factor=None) -> tuple[Array, _CollapsedTerms]:
        """Collapsed lower bound on the log marginal likelihood of standardised ``y``."""
        process = self.process
        terms = _collapsed_terms(process.kernel, process.noise, self.inducing_inputs, X, y, kzz_factor)
        n = jnp.asarray(X.shape[0], y.dtype)
        value = process._log_marginal(terms.log_det, terms.quadratic, n) - 0.5 * terms.trace / process.noise
        return value, terms

    def _objective(self, X, y):
        value, _ = self._bound(X, y)
        if self.process.hyperprior:
            value = value + self.process.log_hyperprior()
        return -value / X.shape[0]

    def fit(self, X, y, *, key=None, num_restarts: int | None = None) -> "SparsePosterior":
        """Choose inducing inputs, maximise the collapsed bound (plus hyperprior) and condition.

        Targets, minus the mean function if there is one, are standardised as for the exact
        processes. ``key`` seeds the inducing-input initialisation and the restarts; with
        ``None`` both use seed 0.
        """
        X_np, X, y_std, standardizer = self._prepare(X, y)
        key = jax.random.key(0) if key is None else key
        init_key, restart_key = jax.random.split(key)
        model = self._with_inducing(X_np, init_key)
        restarts = self.num_restarts if num_restarts is None else num_restarts
        if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
            raise ValueError(f"num_restarts must be a positive integer, got {restarts!r}.")
        if not standardizer.constant:
            model = model._optimize(X, y_std, restart_key, restarts)
        return model._condition(X, y_std, standardizer)

    def condition(self, X, y) -> "SparsePosterior":
        """Condition on data with the current hyperparameters and inducing inputs, without fitting."""
        X_np, X, y_std, standardizer = self._prepare(X, y)
        return self._with_inducing(X_np, None)._condition(X, y_std, standardizer)

    def log_marginal_bound(self, X, y) -> Array:
        """Collapsed lower bound on the log marginal likelihood of ``y`` as given (no standardisation)."""
        X_np, X, _, _ = self._prepare(X, y)
        model = self._with_inducing(X_np, None)
        residual = jnp.asarray(np.asarray(y, np.float64).reshape(-1) - model.process._mean_values(X_np), X.dtype)
        return _bound_program(model, X, residual)

    def _optimize(self, X, y, key, num_restarts: int) -> "SparseProcess":
        theta, bounds = self._parameters()
        u_init = jax.tree.map(to_unconstrained, theta, bounds)
        leaves, treedef = jax.tree.flatten(u_init)
        process_leaves = len(jax.tree.leaves(u_init["process"]))
        keys = jax.random.split(key, len(leaves))
        starts = []
        for i, (leaf, leaf_key) in enumerate(zip(leaves, keys)):
            copies = jnp.broadcast_to(leaf, (num_restarts,) + leaf.shape)
            if num_restarts > 1 and i < process_leaves:
                noise = jax.random.normal(leaf_key, (num_restarts - 1,) + leaf.shape, leaf.dtype)
                copies = jnp.concatenate([leaf[None], leaf[None] + noise])
            starts.append(copies)
        u_best, best_loss = _sparse_fit_program(self, jax.tree.unflatten(treedef, starts), X, y)
        if not np.isfinite(float(best_loss)):
            warnings.warn(
                "Fitting the sparse bound found no finite value; keeping the initial hyperparameters. "
                "Raise the process's noise_lower_bound or use fewer inducing inputs.",
                NumericalWarning,
                stacklevel=3,
            )
            return self
        return self._with_parameters(jax.tree.map(to_constrained, u_best, bounds))

    def _condition(self, X, y, standardizer: Standardizer) -> "SparsePosterior":
        kzz, terms = _sparse_condition_program(self, X, y)
        report_cholesky(kzz, "the inducing covariance k(Z, Z)")
        if not bool(jnp.all(jnp.isfinite(terms.b_factor))):
            raise FloatingPointError(
                "The sparse posterior could not be factorised (non-finite Cholesky factor of "
                "I + A A^T). Raise the process's noise_lower_bound, or enable float64 with "
                "jax.config.update('jax_enable_x64', True)."
            )
        n = jnp.asarray(X.shape[0], y.dtype)
        nodes = None
        if isinstance(self.process, ScaleMixtureProcess):
            nodes = self.process._checked_scale_nodes(terms.quadratic, n)
        dtype = float_dtype()
        return SparsePosterior(
            model=self,
            kzz_factor=terms.kzz_factor,
            b_factor=terms.b_factor,
            projected=terms.projected,
            log_det=terms.log_det,
            quadratic=terms.quadratic,
            trace=terms.trace,
            n=n,
            y_mean=jnp.asarray(standardizer.mean, dtype),
            y_scale=jnp.asarray(standardizer.scale, dtype),
            scale_nodes=nodes,
        )


@eqx.filter_jit
def _sparse_fit_program(model: SparseProcess, u0_batch, X, y):
    _, bounds = model._parameters()

    def loss(u):
        return model._with_parameters(jax.tree.map(to_constrained, u, bounds))._objective(X, y)

    u_best, best_loss, _ = minimize_restarts(loss, u0_batch, max_iterations=model.process.max_iterations)
    return u_best, best_loss


@eqx.filter_jit
def _sparse_condition_program(model: SparseProcess, X, y):
    kzz = factor_with_jitter(_kzz(model.process.kernel, model.inducing_inputs))
    _, terms = model._bound(X, y, kzz_factor=kzz.factor)
    return kzz, terms


@eqx.filter_jit
def _bound_program(model: SparseProcess, X, y):
    value, _ = model._bound(X, y)
    return value


class SparsePosterior(eqx.Module):
    """Posterior of a :class:`SparseProcess`, with the predictive family of the process it approximates.

    Gaussian for a :class:`~probnn.processes.GaussianProcess`, Student-t for a
    :class:`~probnn.processes.StudentTProcess`, and a mixture of Gaussians over the
    posterior nodes of ``s`` for a :class:`~probnn.processes.ScaleMixtureProcess`.
    """

    model: SparseProcess
    kzz_factor: Float[Array, "M M"]
    b_factor: Float[Array, "M M"]
    projected: Float[Array, " M"]
    log_det: Float[Array, ""]
    quadratic: Float[Array, ""]
    trace: Float[Array, ""]
    n: Float[Array, ""]
    y_mean: Float[Array, ""]
    y_scale: Float[Array, ""]
    scale_nodes: ScaleNodes | None

    @property
    def num_data(self) -> int:
        """Number of training points."""
        return int(self.n)

    @property
    def inducing_inputs(self) -> Array:
        """The fitted inducing inputs ``Z``, shape ``(M, d)``."""
        return self.model.inducing_inputs

    def _check_test_inputs(self, X_new):
        return check_test_inputs(X_new, self.inducing_inputs.shape[1], self.inducing_inputs.dtype)

    def _projections(self, X_new):
        kernel = self.model.process.kernel
        v1 = solve_triangular_lower(self.kzz_factor, kernel.cross(self.inducing_inputs, X_new))
        v2 = solve_triangular_lower(self.b_factor, v1)
        return v1, v2

    def _moments(self, X_new, latent: bool):
        """Standardised-scale mean and variance at ``X_new``, given ``s = 1``."""
        v1, v2 = self._projections(X_new)
        mean = v2.T @ self.projected
        variance = self.model.process.kernel.diag(X_new) - jnp.sum(v1**2, axis=0) + jnp.sum(v2**2, axis=0)
        variance = jnp.maximum(variance, 0.0)
        if not latent:
            variance = variance + self.model.process.noise
        return mean, jnp.maximum(variance, jnp.finfo(variance.dtype).tiny)

    def _offset(self, X_new):
        return prediction_offset(self.model.process.mean_function, self.y_mean, X_new)

    @property
    def degrees_of_freedom(self) -> Array:
        """``2 alpha + n`` of the Student-t predictive (Student-t processes only)."""
        process = self._student_t()
        return 2.0 * process.alpha + self.n

    @property
    def scale_factor(self) -> Array:
        """``(2 beta + q) / (2 alpha + n)``, the Student-t predictive's variance factor (Student-t processes only)."""
        process = self._student_t()
        return (2.0 * process.beta + self.quadratic) / (2.0 * process.alpha + self.n)

    def _student_t(self) -> StudentTProcess:
        if not isinstance(self.model.process, StudentTProcess):
            raise ValueError(f"This posterior approximates a {type(self.model.process).__name__}, not a StudentTProcess.")
        return self.model.process

    def predict(self, X_new, latent: bool = False) -> dist.Distribution:
        """Predictive distribution at ``X_new`` on the original target scale, batch shape ``(m,)``.

        ``latent=True`` gives the noise-free function value, otherwise a new observation.
        """
        X_new = self._check_test_inputs(X_new)
        mean, variance = self._moments(X_new, latent)
        location = mean * self.y_scale + self._offset(X_new)
        process = self.model.process
        if isinstance(process, ScaleMixtureProcess):
            return gaussian_scale_mixture(location, variance * self.y_scale**2, self.scale_nodes)
        if isinstance(process, StudentTProcess):
            df = jnp.broadcast_to(self.degrees_of_freedom, mean.shape)
            return StudentTPredictive(df, location, jnp.sqrt(self.scale_factor * variance) * self.y_scale)
        return dist.Normal(location, jnp.sqrt(variance) * self.y_scale)

    def sample_functions(self, key, X_new, num_samples: int) -> Array:
        """Draw joint samples of the latent function at ``X_new``, shape ``(num_samples, m)``."""
        X_new = self._check_test_inputs(X_new)
        mean, result = _sparse_joint_program(self, X_new)
        report_cholesky(result, "the joint posterior covariance at X_new")
        normal_key, scale_key = jax.random.split(key)
        z = jax.random.normal(normal_key, (num_samples, X_new.shape[0]), dtype=result.factor.dtype)
        paths = z @ result.factor.T
        process = self.model.process
        if isinstance(process, ScaleMixtureProcess):
            index = jax.random.categorical(scale_key, self.scale_nodes.log_weights, shape=(num_samples,))
            paths = jnp.exp(0.5 * self.scale_nodes.log_scales[index])[:, None] * paths
        elif isinstance(process, StudentTProcess):
            # A joint Student-t draw is a Gaussian draw scaled by g ~ InvGamma(df/2, df/2).
            df = self.degrees_of_freedom
            g = (df / 2.0) / jax.random.gamma(scale_key, df / 2.0, (num_samples, 1), dtype=paths.dtype)
            paths = jnp.sqrt(g * self.scale_factor) * paths
        return (mean + paths) * self.y_scale + self._offset(X_new)

    def log_marginal_likelihood(self) -> Array:
        """Return the collapsed lower bound on the log marginal likelihood, on the original target scale."""
        process = self.model.process
        value = process._log_marginal(self.log_det, self.quadratic, self.n) - 0.5 * self.trace / process.noise
        return value - self.n * jnp.log(self.y_scale)


@eqx.filter_jit
def _sparse_joint_program(posterior: SparsePosterior, X_new):
    kernel = posterior.model.process.kernel
    v1, v2 = posterior._projections(X_new)
    mean = v2.T @ posterior.projected
    covariance = kernel.gram(X_new) - v1.T @ v1 + v2.T @ v2
    return mean, factor_with_jitter(0.5 * (covariance + covariance.T))
