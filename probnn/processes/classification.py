r"""Classification with scale mixtures of NNGPs: label regression and sparse variational inference.

Lee, Yun, Yang and Lee ("Scale Mixtures of Neural Network Gaussian Processes", ICLR 2022,
arXiv:2107.01408) classify with an infinitely wide network whose last-layer variance ``s``
has a prior. With ``C`` classes the network has ``C`` outputs, which share the kernel ``k``
and the scale ``s``: given ``s`` the outputs are independent ``GP(0, s k)``. This module
implements the paper's two ways of classifying with that prior.

**Regression on one-hot labels** (:class:`OneHotRegressionClassifier`, closed form). The
one-hot label matrix ``Y`` (``n x C``) is treated as ``C`` regression targets, with entries
0 and 1 as in the authors' code (github.com/yuneg11/Scale-Mixtures-of-NNGP) or centred to
``-1/C`` and ``1 - 1/C``,

.. math::

    y_c \mid s \sim \mathcal N\big(0, s (K + \epsilon I)\big) \quad (c = 1, \dots, C),
    \qquad s \sim p(s).

Stacking the columns gives one regression on ``vec(Y)`` with covariance
:math:`s (I_C \otimes A)`, :math:`A = K + \epsilon I`. Every formula of the single-output
scale mixture therefore applies with ``n`` replaced by ``n C``, :math:`\log|A|` by
:math:`C \log|A|` and ``q`` by :math:`q = \sum_c y_c^\top A^{-1} y_c`. An inverse-gamma prior
``InvGamma(alpha, beta)`` gives the posterior ``InvGamma(alpha + nC/2, beta + q/2)`` and a
Student-t predictive per class with ``2 alpha + n C`` degrees of freedom. Other priors are
integrated by quadrature in ``log s`` (:mod:`probnn.samplers.scale`). The posterior of ``s``
has relative spread about ``1 / sqrt(alpha + nC/2)``, 0.02 for 400 digits with 10 classes,
so with more than a few hundred labels the heavy-tailed closed form predicts almost like
the Gaussian process with a fitted kernel variance.

**Sparse variational classification** (:class:`SparseVariationalClassifier`). The
outputs go through a softmax likelihood, :math:`p(y = c \mid f) = \mathrm{softmax}(f)_c`.
With ``M`` inducing inputs ``Z``, :math:`K_{ZZ} = L L^\top` and whitened inducing values
:math:`v_c \sim \mathcal N(0, I)`, each output is :math:`f_c = \sqrt{s}\, g_c` where
:math:`g_c` is the GP with kernel ``k`` conditioned on :math:`g_c(Z) = L v_c`. The
variational posterior is :math:`q(s) \prod_c q(v_c)` with
:math:`q(v_c) = \mathcal N(m_c, R_c R_c^\top)`, :math:`R_c` lower triangular, and
:math:`q(s) = \mathrm{InvGamma}(a, b)`. The evidence lower bound is

.. math::

    \mathcal L = \sum_{i=1}^N \mathbb E_{q(s)\, q(g_i)}
        \big[\log \mathrm{softmax}(\sqrt{s}\, g_i)_{y_i}\big]
      - \sum_c \mathrm{KL}\big(q(v_c) \,\|\, \mathcal N(0, I)\big)
      - \mathrm{KL}\big(q(s) \,\|\, p(s)\big),

where :math:`q(g_{ic}) = \mathcal N(\mu_{ic}, \sigma^2_{ic})` with
:math:`\mu_{ic} = a_i^\top m_c`,
:math:`\sigma^2_{ic} = k(x_i, x_i) - a_i^\top a_i + \lVert R_c^\top a_i \rVert^2` and
:math:`a_i = L^{-1} k(Z, x_i)`. Without a scale prior ``s`` is fixed to 1 and the last
KL term is absent, which is the sparse variational GP (Hensman, Matthews and Ghahramani,
AISTATS 2015) with the NNGP kernel: the paper's Gaussian baseline.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from jax.scipy.special import log_ndtr, logsumexp
from jaxtyping import Array, Float
from numpyro.distributions.kl import kl_divergence

from probnn.kernels.base import Kernel, check_inputs, positive_array
from probnn.kernels.linalg import (
    _objective_factor,
    cho_solve,
    factor_with_jitter,
    log_det_from_cholesky,
    report_cholesky,
    solve_triangular_lower,
)
from probnn.priors.scale import check_scale_prior
from probnn.processes._data import PaddedData, bucket_size, check_test_inputs, float_dtype, warn_precision
from probnn.processes.exact import (
    NOISE_LOWER_BOUND,
    GaussianProcess,
    StudentTPredictive,
    StudentTProcess,
    _ExactProcess,
)
from probnn.processes.inducing import check_inducing_init, initial_inducing_inputs
from probnn.processes.scale_mixture import ScaleMixtureProcess
from probnn.samplers.scale import ScaleNodes, gaussian_scale_mixture, scale_quadrature

logger = logging.getLogger(__name__)

#: Target encodings of :class:`OneHotRegressionClassifier`: 0 and 1, or 0 and 1 minus ``1/C``.
TARGET_ENCODINGS = ("one-hot", "centered")

#: Gauss-Hermite nodes for the probability that a class has the largest output. The
#: integrand is a product of normal cdfs, smooth in the integration variable.
HERMITE_NODES = 32

#: Quadrature nodes in ``log s`` for those probabilities. The trapezoid rule converges
#: geometrically for the smooth unimodal posteriors of ``s``, and each node costs one pass
#: over the ``(m, C, C, HERMITE_NODES)`` array, so fewer are used than for the predictive.
PROBABILITY_SCALE_NODES = 32


#: Test points per chunk when predicting, so Monte Carlo arrays stay near
#: ``PREDICT_CHUNK * num_samples * C`` entries.
PREDICT_CHUNK = 512

#: Adam steps compiled into one ``lax.scan``. The progress bar advances once per chunk.
STEPS_PER_CHUNK = 50


# -- input checks ------------------------------------------------------------------------------


def _check_integer(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_positive_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
    return float(value)


def _check_labels(labels, num_rows: int, num_classes: int | None = None) -> tuple[np.ndarray, int]:
    """Return ``labels`` as an int64 array of shape ``(n,)`` and the number of classes.

    Labels are class indices ``0, ..., C - 1``. Floats are accepted when every value is a
    whole number. ``C`` is ``num_classes`` when given, else the largest label plus one.

    Raises
    ------
    ValueError
        If the labels are not a 1-d array with one entry per row of ``X``, are not whole
        numbers, lie outside ``0, ..., C - 1``, or give fewer than two classes.
    """
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(
            f"labels must have shape (n,) with one class index per row of X; got shape {np.shape(labels)}. "
            "Pass class indices, not one-hot rows (use labels.argmax(axis=1))."
        )
    if array.shape[0] != num_rows:
        raise ValueError(
            f"X has {num_rows} rows but labels has {array.shape[0]} entries; pass one label per input row."
        )
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f"labels must be integer class indices 0, ..., C - 1, got dtype {array.dtype}.")
    if not np.issubdtype(array.dtype, np.integer):
        whole = np.isfinite(array) & (array == np.round(array))
        if not np.all(whole):
            bad = np.unique(array[~whole])[:5].tolist()
            raise ValueError(
                f"labels must be integer class indices 0, ..., C - 1; found the non-integer values {bad}."
            )
    array = array.astype(np.int64)
    if num_classes is not None:
        num_classes = _check_integer(num_classes, "num_classes", 2)
    elif array.size:
        num_classes = int(array.max()) + 1
    else:
        num_classes = 0
    outside = (array < 0) | (array >= num_classes)
    if np.any(outside):
        bad = np.unique(array[outside])[:5].tolist()
        raise ValueError(
            f"labels must lie in 0, ..., {num_classes - 1} for {num_classes} classes; found {bad}. "
            "Map the classes to consecutive integers from 0, or raise num_classes."
        )
    if num_classes < 2:
        raise ValueError(
            f"Classification needs at least two classes, but the labels give {num_classes} "
            f"(largest label {int(array.max()) if array.size else None}). Pass num_classes if some "
            "classes have no training points."
        )
    return array, num_classes


def _check_classification_data(X, labels, num_classes):
    if np.ndim(X) not in (1, 2):
        raise ValueError(
            f"X must have shape (n, d), or (n,) for scalar inputs; got shape {np.shape(X)}."
        )
    X = check_inputs(X, "X")
    if X.shape[0] == 0:
        raise ValueError("X has no rows; classification needs at least one training point per fit.")
    labels, num_classes = _check_labels(labels, X.shape[0], num_classes)
    warn_precision(X)
    return X.astype(np.float64), labels, num_classes


def _resolve_key(key):
    """Return ``key``, or the fixed ``jax.random.key(0)`` when it is ``None``."""
    return jax.random.key(0) if key is None else key


# -- inverse-gamma KL divergence ---------------------------------------------------------------


def inverse_gamma_kl(q: dist.InverseGamma, p: dist.InverseGamma) -> Array:
    r"""Compute :math:`\mathrm{KL}(q \,\|\, p)` between two inverse-gamma distributions.

    ``s ~ InvGamma(a, b)`` exactly when ``1/s ~ Gamma(a, rate=b)``, and the KL divergence
    is unchanged by the bijection ``s -> 1/s``, so this is the gamma divergence that numpyro
    implements (numpyro 0.22 registers none for ``InverseGamma``):

    .. math::

        \mathrm{KL} = (a - a_0)\,\psi(a) - \log\Gamma(a) + \log\Gamma(a_0)
            + a_0 (\log b - \log b_0) + a \frac{b_0 - b}{b},

    for :math:`q = \mathrm{InvGamma}(a, b)` and :math:`p = \mathrm{InvGamma}(a_0, b_0)`.
    """
    return kl_divergence(dist.Gamma(q.concentration, q.rate), dist.Gamma(p.concentration, p.rate))


# -- (a) regression on one-hot labels -----------------------------------------------------------


@jax.custom_vjp
def _log_det_and_total_quadratic(A, Y):
    r"""Return :math:`\log|A|` and :math:`\sum_c y_c^\top A^{-1} y_c` for the columns of ``Y``.

    The matrix version of :func:`probnn.kernels.linalg.gaussian_log_det_and_quadratic`,
    with the same fixed jitter and the gradients written out:
    :math:`\partial \log|A| / \partial A = A^{-1}` and
    :math:`\partial q / \partial A = -W W^\top` with :math:`W = A^{-1} Y`.
    """
    L = _objective_factor(A)
    W = cho_solve(L, Y)
    return log_det_from_cholesky(L), jnp.sum(Y * W)


def _log_det_total_forward(A, Y):
    L = _objective_factor(A)
    W = cho_solve(L, Y)
    return (log_det_from_cholesky(L), jnp.sum(Y * W)), (L, W)


def _log_det_total_backward(residuals, cotangents):
    L, W = residuals
    log_det_bar, quadratic_bar = cotangents
    A_inv = cho_solve(L, jnp.eye(L.shape[-1], dtype=L.dtype))
    A_bar = log_det_bar * A_inv - quadratic_bar * (W @ W.T)
    return A_bar, 2.0 * quadratic_bar * W


_log_det_and_total_quadratic.defvjp(_log_det_total_forward, _log_det_total_backward)


def _one_hot_objective(self, data: PaddedData):
    """Return the negative log marginal likelihood of all ``C`` target columns, per target entry.

    ``vec(Y)`` has covariance ``s (I_C kron A)``, whose log determinant is ``C log|A|``, so
    the single-output ``_log_marginal`` of each process applies with ``n C`` targets.
    """
    num_classes = data.y.shape[1]
    log_det, quadratic = _log_det_and_total_quadratic(self._noisy_gram(data), data.y)
    value = self._log_marginal(num_classes * log_det, quadratic, num_classes * data.n)
    if self.hyperprior:
        value = value + self.log_hyperprior()
    return -value / jnp.maximum(num_classes * data.n, 1.0)


# The exact processes fit through ``_optimize``, which minimises ``_objective``. These
# subclasses only swap that objective, so every hyperparameter, bound and hyperprior of the
# regression processes carries over unchanged.
class _GaussianOneHot(GaussianProcess):
    _objective = _one_hot_objective


class _StudentTOneHot(StudentTProcess):
    _objective = _one_hot_objective


class _ScaleMixtureOneHot(ScaleMixtureProcess):
    _objective = _one_hot_objective


def _pad_targets(X: np.ndarray, targets: np.ndarray) -> PaddedData:
    """Pad inputs and the ``(n, C)`` target matrix to the bucket size, as the regression processes do."""
    n, num_classes = targets.shape
    size = bucket_size(n)
    dtype = float_dtype()
    X_pad = np.zeros((size, X.shape[1]))
    X_pad[:n] = X
    Y_pad = np.zeros((size, num_classes))
    Y_pad[:n] = targets
    mask = np.zeros(size, dtype=bool)
    mask[:n] = True
    return PaddedData(jnp.asarray(X_pad, dtype), jnp.asarray(Y_pad, dtype), jnp.asarray(mask), jnp.asarray(n, dtype))


class OneHotRegressionClassifier(eqx.Module):
    r"""Classify by regressing one-hot labels with a (scale-mixture) NNGP, in closed form.

    The ``C`` columns of the one-hot label matrix are regression targets that share the
    kernel, the noise and the last-layer variance ``s`` (see the module docstring). The
    hyperparameters are fitted by the marginal likelihood of all ``n C`` targets together.
    Class probabilities are the posterior probability that each class has the largest
    output, computed by quadrature (see :meth:`OneHotRegressionPosterior.predict_proba`).

    Parameters
    ----------
    kernel : probnn.kernels.Kernel
        Covariance function, e.g. ``NNGP(depth=3)``. With a scale prior its ``variance``
        is held at its value, because ``s`` plays its role.
    scale_prior : numpyro distribution or None
        Prior of ``s``. ``None`` fixes ``s = 1`` and learns the kernel variance: the plain
        NNGP (the Gaussian baseline). ``InverseGamma`` gives the Student-t process in
        closed form; any other positive scalar distribution (``probnn.priors.BurrXII``,
        ``HalfCauchy``, ...) is integrated by quadrature in ``log s``.
    noise : float or None
        Noise variance of the targets (relative to ``s`` when there is a scale prior);
        ``None`` learns it.
    targets : {"one-hot", "centered"}
        ``"one-hot"`` regresses on 0 and 1, as the authors' code does. ``"centered"``
        subtracts ``1/C`` from every entry (targets ``-1/C`` and ``1 - 1/C``), as Lee et
        al. (ICLR 2018) do for the NNGP, so the zero prior mean is the label average.
    learn_scale_prior : bool
        Fit the prior's parameters (``alpha > 1`` and ``beta`` for ``InverseGamma``) by the
        marginal likelihood.
    num_nodes : int
        Quadrature nodes in ``log s``, i.e. mixture components of the predictive for
        priors other than ``InverseGamma``.
    noise_lower_bound, num_restarts, max_iterations, hyperprior
        As for :class:`~probnn.processes.GaussianProcess`.

    Examples
    --------
    >>> import jax, numpy as np, numpyro.distributions as dist
    >>> jax.config.update("jax_enable_x64", True)
    >>> from probnn.kernels import NNGP
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 2)); labels = (X[:, 0] > 0).astype(int)
    >>> model = OneHotRegressionClassifier(NNGP(depth=2), dist.InverseGamma(3.0, 2.0))
    >>> posterior = model.fit(X, labels, key=jax.random.key(0))
    >>> posterior.predict_proba(X[:3]).shape
    (3, 2)
    """

    process: _ExactProcess
    targets: str = eqx.field(static=True)

    def __init__(
        self,
        kernel: Kernel,
        scale_prior: dist.Distribution | None = None,
        noise: float | None = None,
        *,
        targets: str = "one-hot",
        learn_scale_prior: bool = True,
        num_nodes: int = 128,
        noise_lower_bound: float = NOISE_LOWER_BOUND,
        num_restarts: int = 4,
        max_iterations: int = 200,
        hyperprior: bool = True,
    ):
        if targets not in TARGET_ENCODINGS:
            raise ValueError(f"targets must be one of {TARGET_ENCODINGS}, got {targets!r}.")
        common = dict(
            noise=noise,
            noise_lower_bound=noise_lower_bound,
            num_restarts=num_restarts,
            max_iterations=max_iterations,
            hyperprior=hyperprior,
        )
        if scale_prior is None:
            self.process = _GaussianOneHot(kernel, **common)
        elif isinstance(scale_prior, dist.InverseGamma):
            check_scale_prior(scale_prior)
            self.process = _StudentTOneHot(
                kernel,
                alpha=float(scale_prior.concentration),
                beta=float(scale_prior.rate),
                learn_scale_prior=learn_scale_prior,
                **common,
            )
        else:
            self.process = _ScaleMixtureOneHot(
                kernel, scale_prior, learn_scale_prior=learn_scale_prior, num_nodes=num_nodes, **common
            )
        self.targets = targets

    def _target_matrix(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        one_hot = np.eye(num_classes)[labels]
        if self.targets == "centered":
            return one_hot - 1.0 / num_classes
        return one_hot

    def fit(self, X, labels, *, num_classes: int | None = None, key=None, num_restarts: int | None = None):
        """Fit the hyperparameters by the marginal likelihood and condition on the labels.

        Parameters
        ----------
        X : array of shape (n, d)
        labels : int array of shape (n,)
            Class indices ``0, ..., C - 1``.
        num_classes : int, optional
            ``C``; defaults to the largest label plus one.
        key : jax.random key
            Draws the random L-BFGS restarts; needed when ``num_restarts > 1``.
        num_restarts : int, optional
            Overrides the model's number of restarts for this call.

        Returns
        -------
        OneHotRegressionPosterior
        """
        X, labels, num_classes = _check_classification_data(X, labels, num_classes)
        restarts = self.process.num_restarts if num_restarts is None else num_restarts
        restarts = _check_integer(restarts, "num_restarts", 1)
        if restarts > 1 and key is None:
            raise ValueError(
                f"fit needs key=jax.random.key(seed) for the {restarts - 1} random restarts; pass a "
                "key, or num_restarts=1."
            )
        data = _pad_targets(X, self._target_matrix(labels, num_classes))
        process = self.process.with_input_dim(X.shape[1])._optimize(data, key, restarts)
        return self._condition(process, data)

    def condition(self, X, labels, *, num_classes: int | None = None):
        """Condition on the labels with the current hyperparameters, without fitting them."""
        X, labels, num_classes = _check_classification_data(X, labels, num_classes)
        data = _pad_targets(X, self._target_matrix(labels, num_classes))
        return self._condition(self.process.with_input_dim(X.shape[1]), data)

    def _condition(self, process: _ExactProcess, data: PaddedData):
        result, solved, quadratic = _condition_targets_program(process, data)
        report_cholesky(result, "the training covariance k(X, X) + noise * I")
        nodes = _scale_nodes_program(process, quadratic, data.n * data.y.shape[1])
        if not bool(jnp.all(jnp.isfinite(nodes.log_weights))):
            raise FloatingPointError(
                "The posterior of the last-layer variance has no finite weights: the scale prior "
                "gives zero density wherever the labels put the scale. Choose a prior with more "
                "mass near the data's scale."
            )
        num_classes = data.y.shape[1]
        offset = -1.0 / num_classes if self.targets == "centered" else 0.0
        return OneHotRegressionPosterior(
            model=eqx.tree_at(lambda m: m.process, self, process),
            data=data,
            cholesky_factor=result.factor,
            solved=solved,
            quadratic=quadratic,
            scale_nodes=nodes,
            target_offset=jnp.asarray(offset, float_dtype()),
        )


@eqx.filter_jit
def _condition_targets_program(process: _ExactProcess, data: PaddedData):
    result = factor_with_jitter(process._noisy_gram(data))
    solved = cho_solve(result.factor, data.y)
    return result, solved, jnp.sum(data.y * solved)


def _scale_nodes(process: _ExactProcess, quadratic, num_targets, num_nodes: int | None = None) -> ScaleNodes:
    """Compute posterior nodes of ``s`` given ``n C`` targets with total quadratic form ``quadratic``.

    With ``num_nodes`` the nodes come from the trapezoid rule in ``log s`` for every prior.
    Without it, a scale-mixture process uses its own ``inference`` setting and node count.
    Without a scale prior ``s`` is fixed to 1, a single node of weight 1.
    """
    if isinstance(process, StudentTProcess):
        prior = dist.InverseGamma(process.alpha, process.beta)
        return scale_quadrature(prior.log_prob, num_targets, quadratic, num_nodes or 128)
    if isinstance(process, ScaleMixtureProcess):
        if num_nodes is None:
            return process._scale_nodes(quadratic, num_targets)
        return scale_quadrature(process.scale_prior.log_prob, num_targets, quadratic, num_nodes)
    zero = jnp.zeros(1, dtype=jnp.result_type(quadratic))
    return ScaleNodes(zero, zero, -0.5 * quadratic)


_scale_nodes_program = eqx.filter_jit(_scale_nodes)


class OneHotRegressionPosterior(eqx.Module):
    """Posterior of a :class:`OneHotRegressionClassifier`: fitted model and factorised training data.

    Outputs are on the scale of the one-hot targets: a class's output is near 1 where
    the class is likely and near 0 elsewhere, also for ``targets="centered"``.
    """

    model: OneHotRegressionClassifier
    data: PaddedData
    cholesky_factor: Float[Array, "N N"]
    solved: Float[Array, "N C"]
    quadratic: Float[Array, ""]
    scale_nodes: ScaleNodes
    target_offset: Float[Array, ""]

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return int(self.data.y.shape[1])

    @property
    def process(self) -> _ExactProcess:
        """The fitted regression process shared by all classes."""
        return self.model.process

    def _moments(self, X_new, latent: bool):
        """Compute the mean ``(m, C)`` and variance ``(m,)`` of the outputs given ``s = 1``."""
        kernel = self.process.kernel
        cross = jnp.where(self.data.mask[:, None], kernel.cross(self.data.X, X_new), 0.0)
        mean = cross.T @ self.solved
        v = solve_triangular_lower(self.cholesky_factor, cross)
        # Cancellation can leave a slightly negative difference where the data pin the
        # function down, and a variance is never below zero.
        variance = jnp.maximum(kernel.diag(X_new) - jnp.sum(v**2, axis=0), 0.0)
        if not latent:
            variance = variance + self.process.noise
        return mean - self.target_offset, jnp.maximum(variance, jnp.finfo(variance.dtype).tiny)

    def predict_targets(self, X_new, latent: bool = False) -> dist.Distribution:
        """Return the predictive distribution of each class's output, batch shape ``(m, C)``.

        Lee et al. (ICLR 2022) score this model by the log density of the one-hot test
        labels under this predictive. Given ``s`` the classes are independent with the same
        variance.

        Parameters
        ----------
        X_new : array of shape (m, d)
        latent : bool
            If true, the noise-free output; otherwise a noisy target (noise included).

        Returns
        -------
        numpyro.distributions.Distribution
            ``Normal`` without a scale prior, ``StudentT`` with ``2 alpha + n C`` degrees
            of freedom for ``InverseGamma``, else a ``MixtureSameFamily`` of Normals over
            the quadrature nodes of ``s``.
        """
        X_new = check_test_inputs(X_new, self.data.X.shape[1], self.data.X.dtype)
        mean, variance = _moments_program(self, X_new, latent)
        variance = jnp.broadcast_to(variance[:, None], mean.shape)
        process = self.process
        if isinstance(process, StudentTProcess):
            num_targets = self.data.n * self.num_classes
            df = 2.0 * process.alpha + num_targets
            scale_factor = (2.0 * process.beta + self.quadratic) / df
            return StudentTPredictive(jnp.broadcast_to(df, mean.shape), mean, jnp.sqrt(scale_factor * variance))
        if isinstance(process, ScaleMixtureProcess):
            return gaussian_scale_mixture(mean, variance, self.scale_nodes)
        return dist.Normal(mean, jnp.sqrt(variance))

    def predict_proba(self, X_new, latent: bool = False) -> np.ndarray:
        r"""Compute the probability that each class has the largest output, shape ``(m, C)``.

        Lee et al. (ICLR 2022) predict the class with the largest output and define no class
        probabilities for this model, so here they are the posterior probabilities of that
        decision. Given ``s`` the outputs :math:`f_j \sim \mathcal N(\mu_j, s v)` are
        independent with a common variance, so

        .. math::

            P(c) = \int p(s \mid Y) \int \varphi(z)
                \prod_{j \ne c} \Phi\Big(z + \frac{\mu_c - \mu_j}{\sqrt{s v}}\Big)\, dz\, ds,

        computed with :data:`HERMITE_NODES` Gauss-Hermite nodes in ``z`` and
        :data:`PROBABILITY_SCALE_NODES` trapezoid nodes in ``log s`` (for every scale prior,
        also when the predictive uses importance sampling). Rows are renormalised to sum to 1, which
        removes the small quadrature error. This equals the frequency of each class as the
        argmax of joint Monte Carlo draws (one ``s`` per draw, shared by the classes) in
        the limit of many draws.

        Parameters
        ----------
        X_new : array of shape (m, d)
        latent : bool
            Rank noise-free outputs (true) or noisy targets (false, the default).
        """
        X_new = check_test_inputs(X_new, self.data.X.shape[1], self.data.X.dtype)
        chunks = [
            np.asarray(_argmax_probability_program(self, X_new[start : start + PREDICT_CHUNK], latent))
            for start in range(0, X_new.shape[0], PREDICT_CHUNK)
        ]
        if not chunks:
            return np.zeros((0, self.num_classes))
        return np.concatenate(chunks)

    def predict(self, X_new) -> np.ndarray:
        """Return the class with the largest predictive mean output at each row of ``X_new``, shape ``(m,)``."""
        X_new = check_test_inputs(X_new, self.data.X.shape[1], self.data.X.dtype)
        mean, _ = _moments_program(self, X_new, True)
        return np.asarray(jnp.argmax(mean, axis=1))

    def scale_posterior(self) -> dist.Distribution | None:
        """Return the posterior of ``s``, ``InvGamma(alpha + nC/2, beta + q/2)`` for an inverse-gamma prior.

        For other priors, a mixture of narrow Gaussians in ``log s`` at the quadrature
        nodes (as :meth:`ScaleMixturePosterior.scale_posterior`); ``None`` without a prior.
        """
        process = self.process
        if isinstance(process, StudentTProcess):
            num_targets = self.data.n * self.num_classes
            return dist.InverseGamma(process.alpha + num_targets / 2.0, process.beta + self.quadratic / 2.0)
        if isinstance(process, ScaleMixtureProcess):
            nodes = self.scale_nodes
            spacing = jnp.maximum(jnp.abs(nodes.log_scales[1] - nodes.log_scales[0]), 1e-12)
            return dist.MixtureSameFamily(
                dist.Categorical(logits=nodes.log_weights),
                dist.Normal(nodes.log_scales, jnp.full_like(nodes.log_scales, spacing)),
            )
        return None

    def log_marginal_likelihood(self) -> Array:
        """Return the log marginal likelihood of the ``n x C`` target matrix (the encoding in ``targets``)."""
        num_classes = self.num_classes
        log_det = log_det_from_cholesky(self.cholesky_factor)
        return self.process._log_marginal(num_classes * log_det, self.quadratic, num_classes * self.data.n)


@eqx.filter_jit
def _moments_program(posterior: OneHotRegressionPosterior, X_new, latent: bool):
    return posterior._moments(X_new, latent)


@eqx.filter_jit
def _argmax_probability_program(posterior: OneHotRegressionPosterior, X_new, latent: bool):
    mean, variance = posterior._moments(X_new, latent)
    z, hermite_weights = np.polynomial.hermite_e.hermegauss(HERMITE_NODES)
    z = jnp.asarray(z, mean.dtype)
    # hermegauss integrates against exp(-z^2 / 2); dividing by sqrt(2 pi) gives E over N(0, 1).
    log_hermite = jnp.asarray(np.log(hermite_weights / np.sqrt(2.0 * np.pi)), mean.dtype)
    num_classes = mean.shape[1]
    gap = mean[:, :, None] - mean[:, None, :]
    off_diagonal = ~jnp.eye(num_classes, dtype=bool)

    def add_node(total, node):
        log_scale, log_weight = node
        standardized_gap = gap / jnp.sqrt(jnp.exp(log_scale) * variance)[:, None, None]
        log_cdf = log_ndtr(standardized_gap[..., None] + z)
        log_product = jnp.sum(jnp.where(off_diagonal[None, :, :, None], log_cdf, 0.0), axis=2)
        log_probability = logsumexp(log_product + log_hermite, axis=-1)
        return total + jnp.exp(log_weight + log_probability), None

    num_targets = posterior.data.n * num_classes
    nodes = _scale_nodes(posterior.process, posterior.quadratic, num_targets, PROBABILITY_SCALE_NODES)
    total, _ = jax.lax.scan(add_node, jnp.zeros_like(mean), (nodes.log_scales, nodes.log_weights))
    return total / jnp.sum(total, axis=1, keepdims=True)


# -- (b) sparse variational classification -----------------------------------------------------


def _lower_triangular(raw):
    """Build a lower-triangular factor whose diagonal is ``exp`` of the raw diagonal."""
    diagonal = jnp.exp(jnp.diagonal(raw, axis1=-2, axis2=-1))
    return jnp.tril(raw, -1) + diagonal[..., :, None] * jnp.eye(raw.shape[-1], dtype=raw.dtype)


def _whitened_kl(q_mean, q_scale_tril):
    r"""Return the sum over classes of :math:`\mathrm{KL}(\mathcal N(m_c, R_c R_c^\top) \,\|\, \mathcal N(0, I))`.

    Each term is :math:`\tfrac12 (\operatorname{tr}(R_c R_c^\top) + m_c^\top m_c - M - 2 \sum_i \log R_{c,ii})`.
    """
    num_inducing = q_mean.shape[-1]
    trace = jnp.sum(q_scale_tril**2, axis=(-2, -1))
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(q_scale_tril, axis1=-2, axis2=-1)), axis=-1)
    return 0.5 * jnp.sum(trace + jnp.sum(q_mean**2, axis=-1) - num_inducing - log_det)


class _VariationalState(eqx.Module):
    """Everything the ELBO and the predictions read: kernel, inducing inputs and variational factors."""

    kernel: Kernel
    inducing_inputs: Float[Array, "M d"]
    q_mean: Float[Array, "C M"]
    q_scale_tril: Float[Array, "C M M"]
    q_scale: dist.InverseGamma | None
    jitter: float = eqx.field(static=True)

    def marginals(self, X) -> tuple[Array, Array]:
        """Compute the mean and variance of ``g_c(x)`` under ``q``, each of shape ``(C, n)``."""
        Kzz = self.kernel.gram(self.inducing_inputs)
        scale = jnp.mean(jnp.diagonal(Kzz))
        L = jnp.linalg.cholesky(Kzz + self.jitter * scale * jnp.eye(Kzz.shape[0], dtype=Kzz.dtype))
        A = solve_triangular_lower(L, self.kernel.cross(self.inducing_inputs, X))
        mean = self.q_mean @ A
        projected = jnp.einsum("cji,jn->cin", self.q_scale_tril, A)
        variance = self.kernel.diag(X) - jnp.sum(A**2, axis=0) + jnp.sum(projected**2, axis=1)
        return mean, jnp.maximum(variance, jnp.finfo(variance.dtype).tiny)

    def sample_outputs(self, key, X, num_samples: int, scale_per_point: bool) -> Array:
        """Draw ``f = sqrt(s) g`` at ``X``, returning shape ``(num_samples, n, C)``.

        The ``C`` classes of a point always share ``s``. With ``scale_per_point`` each draw
        and point gets its own ``s``. Otherwise one ``s`` per draw serves all points. Both
        give unbiased per-point expectations, because those depend only on the joint law of
        one point's outputs. Per-point draws have lower variance, but the implicit
        reparameterisation gradient of the gamma sampler cost about 4 ms per thousand
        draws on one CPU core (jax 0.10.2), so training draws one ``s`` per draw.
        """
        mean, variance = self.marginals(X)
        scale_key, normal_key = jax.random.split(key)
        noise = jax.random.normal(normal_key, (num_samples,) + mean.shape, dtype=mean.dtype)
        g = mean + jnp.sqrt(variance) * noise
        if self.q_scale is not None:
            num_scales = mean.shape[1] if scale_per_point else 1
            s = self.q_scale.sample(scale_key, (num_samples, 1, num_scales))
            g = jnp.sqrt(s) * g
        return jnp.swapaxes(g, 1, 2)

    def kl(self, scale_prior) -> Array:
        total = _whitened_kl(self.q_mean, self.q_scale_tril)
        if self.q_scale is not None:
            total = total + inverse_gamma_kl(self.q_scale, scale_prior)
        return total

    def expected_log_likelihood(self, key, X, labels, num_samples: int, scale_per_point: bool) -> Array:
        """Estimate ``sum_i E_q[log softmax(f_i)_{y_i}]`` over the rows given, by Monte Carlo."""
        f = self.sample_outputs(key, X, num_samples, scale_per_point)
        log_probabilities = jax.nn.log_softmax(f, axis=-1)
        picked = jnp.take_along_axis(log_probabilities, labels[None, :, None], axis=-1)[..., 0]
        return jnp.sum(jnp.mean(picked, axis=0))


class SparseVariationalClassifier(eqx.Module):
    r"""Sparse variational classifier with a softmax likelihood and a scale-mixture NNGP prior.

    See the module docstring for the model and the ELBO. Fitting maximises the ELBO with
    Adam on minibatches: the expected log likelihood of ``B`` rows is scaled by ``N / B``
    and estimated with ``num_samples`` reparameterised draws of ``g`` per row and one draw
    of ``s`` per sample, shared by the minibatch.
    Learned are the whitened variational factors ``m_c`` and ``R_c`` (unconstrained, with
    ``exp`` on the diagonal), ``q(s)``'s ``a`` and ``b`` (through their logarithms), the
    inducing inputs when ``learn_inducing`` is set, and the kernel hyperparameters when
    ``learn_kernel`` is set. With a scale prior the kernel ``variance`` stays fixed, because
    ``s`` plays its role.

    Parameters
    ----------
    kernel : probnn.kernels.Kernel
        Shared covariance of the ``C`` outputs, e.g. ``NNGP(depth=3)``.
    scale_prior : numpyro InverseGamma or None
        Prior ``InvGamma(a0, b0)`` of the last-layer variance ``s``. ``None`` fixes
        ``s = 1``: the sparse variational GP with this kernel, the Gaussian baseline of Lee
        et al. (ICLR 2022).
    num_inducing : int
        Number of inducing inputs ``M`` (at most the number of training points).
    inducing_init : {"kmeans", "kcenter", "random"}
        Initial inducing inputs: k-means centres of the training inputs (scikit-learn,
        one k-means++ start), a k-center cover of them, or a random subset; see
        :func:`probnn.processes.inducing.initial_inducing_inputs`.
    learn_inducing : bool
        Move the inducing inputs with the other parameters.
    learn_kernel : bool
        Fit the kernel hyperparameters by the ELBO.
    hyperprior : bool
        Add the kernel's weak log prior to the objective when ``learn_kernel`` is set (MAP
        type-II); the recorded ELBO excludes it.
    num_steps : int
        Adam steps; 0 returns the initial variational posterior.
    batch_size : int
        Rows per minibatch, drawn without replacement each step; at least ``N`` uses all rows.
    learning_rate : float
        Adam step size.
    num_samples : int
        Monte Carlo draws per row and step for the expected log likelihood.
    initial_scale : float
        Initial diagonal of ``R_c``; 1 starts ``q(v_c)`` at the prior's covariance.
    jitter : float
        Added to the diagonal of ``k(Z, Z)``, relative to its mean diagonal.
    progress : bool
        Show a rich progress bar with the running ELBO while fitting.

    Examples
    --------
    >>> import jax, numpy as np, numpyro.distributions as dist
    >>> jax.config.update("jax_enable_x64", True)
    >>> from probnn.kernels import NNGP
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(80, 2)); labels = (X[:, 0] > 0).astype(int)
    >>> model = SparseVariationalClassifier(NNGP(depth=2), dist.InverseGamma(2.0, 2.0),
    ...                                     num_inducing=10, num_steps=50)
    >>> posterior = model.fit(X, labels, key=jax.random.key(0))
    >>> posterior.predict_proba(X[:3]).shape
    (3, 2)
    """

    kernel: Kernel
    scale_prior: dist.InverseGamma | None
    num_inducing: int = eqx.field(static=True)
    inducing_init: str = eqx.field(static=True)
    learn_inducing: bool = eqx.field(static=True)
    learn_kernel: bool = eqx.field(static=True)
    hyperprior: bool = eqx.field(static=True)
    num_steps: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    learning_rate: float = eqx.field(static=True)
    num_samples: int = eqx.field(static=True)
    initial_scale: float = eqx.field(static=True)
    jitter: float = eqx.field(static=True)
    progress: bool = eqx.field(static=True)

    def __init__(
        self,
        kernel: Kernel,
        scale_prior: dist.InverseGamma | None = None,
        *,
        num_inducing: int = 100,
        inducing_init: str = "kmeans",
        learn_inducing: bool = True,
        learn_kernel: bool = True,
        hyperprior: bool = True,
        num_steps: int = 2000,
        batch_size: int = 256,
        learning_rate: float = 0.01,
        num_samples: int = 8,
        initial_scale: float = 1.0,
        jitter: float = 1e-6,
        progress: bool = False,
    ):
        if not isinstance(kernel, Kernel):
            raise ValueError(
                f"kernel must be a probnn.kernels.Kernel such as NNGP(), got {type(kernel).__name__}."
            )

        if scale_prior is not None:
            if not isinstance(scale_prior, dist.InverseGamma):
                raise ValueError(
                    "scale_prior must be numpyro.distributions.InverseGamma(a0, b0) or None, because "
                    f"q(s) is inverse gamma and its KL term is closed form; got {scale_prior!r}. Use "
                    "OneHotRegressionClassifier for other scale priors."
                )
            check_scale_prior(scale_prior)
            dtype = float_dtype()
            scale_prior = dist.InverseGamma(
                jnp.asarray(positive_array(scale_prior.concentration, "scale_prior.concentration"), dtype),
                jnp.asarray(positive_array(scale_prior.rate, "scale_prior.rate"), dtype),
            )
        check_inducing_init(inducing_init)

        self.kernel = kernel
        self.scale_prior = scale_prior
        self.num_inducing = _check_integer(num_inducing, "num_inducing", 1)
        self.inducing_init = inducing_init
        self.learn_inducing = bool(learn_inducing)
        self.learn_kernel = bool(learn_kernel)
        self.hyperprior = bool(hyperprior)
        self.num_steps = _check_integer(num_steps, "num_steps", 0)
        self.batch_size = _check_integer(batch_size, "batch_size", 1)
        self.learning_rate = _check_positive_float(learning_rate, "learning_rate")
        self.num_samples = _check_integer(num_samples, "num_samples", 1)
        self.initial_scale = _check_positive_float(initial_scale, "initial_scale")
        self.jitter = _check_positive_float(jitter, "jitter")
        self.progress = bool(progress)

    # -- parameters ----------------------------------------------------------------------------

    def _kernel_filter(self):
        spec = jax.tree.map(lambda leaf: eqx.is_inexact_array(leaf) and self.learn_kernel, self.kernel)
        if self.scale_prior is not None:
            spec = eqx.tree_at(lambda k: k.variance, spec, False)
        return spec

    def _initial_inducing_inputs(self, key, X: np.ndarray) -> np.ndarray:
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
        return initial_inducing_inputs(X, self.num_inducing, self.inducing_init, seed)

    def _initial_parameters(self, Z: np.ndarray, num_classes: int) -> dict:
        dtype = float_dtype()
        trainable, _ = eqx.partition(self.kernel, self._kernel_filter())
        raw_tril = jnp.broadcast_to(
            jnp.log(self.initial_scale) * jnp.eye(self.num_inducing, dtype=dtype),
            (num_classes, self.num_inducing, self.num_inducing),
        )
        parameters = {
            "kernel": jax.tree.map(jnp.log, trainable),
            "q_mean": jnp.zeros((num_classes, self.num_inducing), dtype),
            "q_scale_tril": jnp.array(raw_tril),
        }
        if self.learn_inducing:
            parameters["inducing_inputs"] = jnp.asarray(Z, dtype)
        if self.scale_prior is not None:
            # q(s) starts at the prior, so the KL term starts at zero.
            parameters["log_concentration"] = jnp.log(self.scale_prior.concentration)
            parameters["log_rate"] = jnp.log(self.scale_prior.rate)
        return parameters

    def _state(self, parameters: dict, fixed_inducing) -> _VariationalState:
        _, static = eqx.partition(self.kernel, self._kernel_filter())
        kernel = eqx.combine(jax.tree.map(jnp.exp, parameters["kernel"]), static)
        q_scale = None
        if self.scale_prior is not None:
            q_scale = dist.InverseGamma(jnp.exp(parameters["log_concentration"]), jnp.exp(parameters["log_rate"]))
        inducing = parameters["inducing_inputs"] if self.learn_inducing else fixed_inducing
        return _VariationalState(
            kernel=kernel,
            inducing_inputs=inducing,
            q_mean=parameters["q_mean"],
            q_scale_tril=_lower_triangular(parameters["q_scale_tril"]),
            q_scale=q_scale,
            jitter=self.jitter,
        )

    # -- fitting -------------------------------------------------------------------------------

    def fit(self, X, labels, *, key, num_classes: int | None = None) -> "SparseVariationalPosterior":
        """Maximise the ELBO and return the variational posterior.

        Parameters
        ----------
        X : array of shape (N, d)
        labels : int array of shape (N,)
            Class indices ``0, ..., C - 1``.
        key : jax.random key
            Drives the inducing-input initialisation, the minibatches and the Monte Carlo draws.
        num_classes : int, optional
            ``C``; defaults to the largest label plus one.

        Returns
        -------
        SparseVariationalPosterior
            Its ``elbo_trace`` contains the minibatch ELBO estimate (full-data scale) of every step.
        """
        X, labels, num_classes = _check_classification_data(X, labels, num_classes)
        if key is None:
            raise ValueError("fit needs key=jax.random.key(seed) for the initialisation, minibatches and samples.")
        num_data = X.shape[0]
        if self.num_inducing > num_data:
            raise ValueError(
                f"num_inducing={self.num_inducing} exceeds the {num_data} training points; pass "
                f"num_inducing <= {num_data}."
            )
        # Per-dimension lengthscales where the kernel has any, as the exact processes use.
        model = eqx.tree_at(lambda m: m.kernel, self, self.kernel.with_input_dim(X.shape[1]))

        init_key, train_key = jax.random.split(key)
        Z = model._initial_inducing_inputs(init_key, X)
        parameters = model._initial_parameters(Z, num_classes)
        dtype = float_dtype()
        fixed_inducing = jnp.asarray(Z, dtype)
        X_array = jnp.asarray(X, dtype)
        labels_array = jnp.asarray(labels)
        logger.info(
            "Fitting %s: %d points, %d classes, %d inducing inputs, %d steps.",
            type(self).__name__, num_data, num_classes, self.num_inducing, self.num_steps,
        )
        parameters, trace = model._maximize_elbo(
            parameters, fixed_inducing, X_array, labels_array, min(self.batch_size, num_data), train_key
        )
        if trace.size and not np.all(np.isfinite(trace)):
            warnings.warn(
                f"{int(np.sum(~np.isfinite(trace)))} of {trace.size} minibatch ELBO estimates were not "
                "finite. Adam skips updates with non-finite gradients; lower learning_rate or raise "
                "jitter if this recurs.",
                RuntimeWarning,
                stacklevel=2,
            )
        if trace.size:
            last = trace[-STEPS_PER_CHUNK:]
            logger.info("Finished fitting: mean ELBO %.4g over the last %d steps.", float(np.mean(last)), last.size)
        state = model._state(parameters, fixed_inducing)
        return SparseVariationalPosterior(
            state=state,
            scale_prior=model.scale_prior,
            elbo_trace=trace,
            num_data=num_data,
        )

    def _maximize_elbo(self, parameters, fixed_inducing, X, labels, batch_size: int, key):
        """Run ``num_steps`` Adam steps in compiled chunks and return the parameters and the ELBO trace."""
        # Settings that do not enter the compiled step are reset, so fits that differ only
        # in them reuse one compilation of _train_chunk.
        step_model = dataclasses.replace(self, num_steps=0, progress=False, inducing_init="random")
        optimizer_state = _optimizer(step_model).init(parameters)
        trace = []
        done = 0
        with _ProgressBar(self.progress, self.num_steps) as advance:
            for chunk in range(-(-self.num_steps // STEPS_PER_CHUNK)):
                length = min(STEPS_PER_CHUNK, self.num_steps - done)
                step_keys = jax.random.split(jax.random.fold_in(key, chunk), length)
                parameters, optimizer_state, elbos = _train_chunk(
                    step_model, parameters, optimizer_state, step_keys, X, labels, fixed_inducing, batch_size
                )
                trace.append(np.asarray(elbos))
                done += length
                advance(length, float(np.mean(trace[-1])))
        return parameters, (np.concatenate(trace) if trace else np.zeros(0))


def _optimizer(model: SparseVariationalClassifier) -> optax.GradientTransformation:
    """Build Adam that skips steps with a non-finite gradient (up to 20 in a row), e.g. from a failed Cholesky."""
    return optax.apply_if_finite(optax.adam(model.learning_rate), max_consecutive_errors=20)


def _objective(model: SparseVariationalClassifier, parameters, fixed_inducing, key, X, labels, num_data):
    """Return the loss ``-(ELBO + log hyperprior) / N`` and the ELBO estimate (full-data scale)."""
    state = model._state(parameters, fixed_inducing)
    expected = state.expected_log_likelihood(key, X, labels, model.num_samples, scale_per_point=False)
    elbo = num_data / X.shape[0] * expected - state.kl(model.scale_prior)
    objective = elbo
    if model.hyperprior and model.learn_kernel:
        objective = objective + state.kernel.log_prior()
    return -objective / num_data, elbo


@eqx.filter_jit
def _train_chunk(model, parameters, optimizer_state, keys, X, labels, fixed_inducing, batch_size: int):
    # The optimizer is rebuilt from the model's static settings inside the compiled program,
    # so repeated fits with equal settings reuse the compilation.
    optimizer = _optimizer(model)
    num_data = X.shape[0]

    def step(carry, key):
        parameters, optimizer_state = carry
        batch_key, sample_key = jax.random.split(key)
        if batch_size < num_data:
            index = jax.random.choice(batch_key, num_data, (batch_size,), replace=False)
            X_batch, labels_batch = X[index], labels[index]
        else:
            X_batch, labels_batch = X, labels
        (_, elbo), grads = jax.value_and_grad(_objective, argnums=1, has_aux=True)(
            model, parameters, fixed_inducing, sample_key, X_batch, labels_batch, num_data
        )
        updates, optimizer_state = optimizer.update(grads, optimizer_state, parameters)
        return (optax.apply_updates(parameters, updates), optimizer_state), elbo

    (parameters, optimizer_state), elbos = jax.lax.scan(step, (parameters, optimizer_state), keys)
    return parameters, optimizer_state, elbos


class _ProgressBar:
    """Context manager that yields ``advance(steps, elbo)``, which draws a rich progress bar when enabled."""

    def __init__(self, enabled: bool, total: int):
        self.enabled = enabled
        self.total = total
        self.progress = None

    def __enter__(self):
        if not self.enabled:
            return lambda steps, elbo: None
        from rich.progress import Progress

        self.progress = Progress()
        self.progress.start()
        task = self.progress.add_task("ELBO", total=self.total)

        def advance(steps, elbo):
            self.progress.update(task, advance=steps, description=f"ELBO {elbo:.4g}")

        return advance

    def __exit__(self, *exc_info):
        if self.progress is not None:
            self.progress.stop()
        return False


class SparseVariationalPosterior(eqx.Module):
    """Fitted variational posterior of a :class:`SparseVariationalClassifier`."""

    state: _VariationalState
    scale_prior: dist.InverseGamma | None
    elbo_trace: np.ndarray
    num_data: int = eqx.field(static=True)

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return int(self.state.q_mean.shape[0])

    @property
    def kernel(self) -> Kernel:
        """The kernel with its fitted hyperparameters."""
        return self.state.kernel

    @property
    def inducing_inputs(self) -> Array:
        """Inducing inputs ``Z``, shape ``(M, d)``."""
        return self.state.inducing_inputs

    def scale_posterior(self) -> dist.InverseGamma | None:
        """Return the variational posterior ``q(s) = InvGamma(a, b)``, or ``None`` when ``s`` is fixed to 1."""
        return self.state.q_scale

    def kl_divergence(self) -> Array:
        """Return the KL terms of the ELBO, ``sum_c KL(q(v_c) || N(0, I)) + KL(q(s) || p(s))``."""
        return self.state.kl(self.scale_prior)

    def predict_latent(self, X_new) -> tuple[Array, Array]:
        """Compute the mean and variance of the whitened outputs ``g`` (before ``sqrt(s)``), each ``(m, C)``."""
        X_new = check_test_inputs(X_new, self.inducing_inputs.shape[1], self.inducing_inputs.dtype)
        mean, variance = _marginals_program(self.state, X_new)
        return mean.T, variance.T

    def predict_proba(self, X_new, *, key=None, num_samples: int = 1000) -> np.ndarray:
        r"""Compute predictive class probabilities, shape ``(m, C)``, by Monte Carlo.

        :math:`p(c \mid x) \approx \frac1S \sum_{k} \mathrm{softmax}(\sqrt{s_k}\, g_k)_c` with
        :math:`s_k \sim q(s)` and :math:`g_k \sim q(g(x))`, one ``s_k`` per draw and point
        shared by the classes. ``key=None`` uses the fixed ``jax.random.key(0)``, so repeated
        calls return the same probabilities; their Monte Carlo error falls like
        ``1 / sqrt(num_samples)``.
        """
        X_new = check_test_inputs(X_new, self.inducing_inputs.shape[1], self.inducing_inputs.dtype)
        num_samples = _check_integer(num_samples, "num_samples", 1)
        key = _resolve_key(key)
        chunks = []
        for index, start in enumerate(range(0, X_new.shape[0], PREDICT_CHUNK)):
            chunk_key = jax.random.fold_in(key, index)
            chunks.append(
                np.asarray(_probability_program(self.state, chunk_key, X_new[start : start + PREDICT_CHUNK], num_samples))
            )
        if not chunks:
            return np.zeros((0, self.num_classes))
        return np.concatenate(chunks)

    def predict(self, X_new, *, key=None, num_samples: int = 1000) -> np.ndarray:
        """Return the most probable class under :meth:`predict_proba`, shape ``(m,)``."""
        return np.argmax(self.predict_proba(X_new, key=key, num_samples=num_samples), axis=1)

    def elbo(self, X, labels, *, key=None, num_samples: int = 64) -> float:
        """Estimate the full-data ELBO at ``(X, labels)`` with ``num_samples`` draws per row.

        ``key=None`` uses the fixed ``jax.random.key(0)``.
        """
        X, labels, _ = _check_classification_data(X, labels, self.num_classes)
        X = check_test_inputs(X, self.inducing_inputs.shape[1], self.inducing_inputs.dtype)
        num_samples = _check_integer(num_samples, "num_samples", 1)
        key = _resolve_key(key)
        labels = jnp.asarray(labels)
        expected = 0.0
        for index, start in enumerate(range(0, X.shape[0], PREDICT_CHUNK)):
            part = slice(start, start + PREDICT_CHUNK)
            expected += float(
                _expected_log_likelihood_program(self.state, jax.random.fold_in(key, index), X[part], labels[part], num_samples)
            )
        return expected - float(self.kl_divergence())


@eqx.filter_jit
def _marginals_program(state: _VariationalState, X_new):
    return state.marginals(X_new)


@eqx.filter_jit
def _probability_program(state: _VariationalState, key, X_new, num_samples: int):
    f = state.sample_outputs(key, X_new, num_samples, scale_per_point=True)
    return jnp.mean(jax.nn.softmax(f, axis=-1), axis=0)


@eqx.filter_jit
def _expected_log_likelihood_program(state: _VariationalState, key, X, labels, num_samples: int):
    return state.expected_log_likelihood(key, X, labels, num_samples, scale_per_point=True)


__all__ = [
    "OneHotRegressionClassifier",
    "OneHotRegressionPosterior",
    "SparseVariationalClassifier",
    "SparseVariationalPosterior",
    "inverse_gamma_kl",
]
