r"""Predictive distribution of infinitely wide networks trained by gradient descent.

The network is the fully connected one of :mod:`probnn.kernels.nngp`, in the NTK
parameterisation, with its output multiplied by :math:`\sqrt{s}`: the kernel's own
``variance`` times ``s`` is the last-layer variance. Every weight and bias starts standard
normal, and full-batch gradient descent with step size :math:`\eta` minimises

.. math::

    \mathcal L(\theta) = \tfrac12 \lVert f(X) - y \rVert^2 .

As the width grows the network stays equal to its linearisation around the initial
parameters (Jacot et al., NeurIPS 2018; Lee et al., "Wide Neural Networks of Any Depth
Evolve as Linear Models Under Gradient Descent", NeurIPS 2019). With ``t`` counted in
gradient steps and steps small enough for gradient flow, the output at new inputs is

.. math::

    f_t(x_*) = f_0(x_*) + A_t \big(y - f_0(X)\big), \qquad
    A_t = \Theta_{*X}\, \Theta^{-1} \big(I - e^{-\eta s \Theta t}\big),

where :math:`\Theta` is the kernel of the trained parameters on the training inputs, for
``s = 1``. Training every layer gives the NTK. Training only the readout (the last layer's
weights and bias) gives the NNGP kernel :math:`K` itself: the readout gradient is
:math:`\sqrt{s}\,(\sqrt{\sigma_w^2/n}\,\phi(h^L), \sigma_b)`, whose inner products tend to
:math:`s K^L`. The initial output is :math:`f_0 \sim \mathcal{GP}(0, s K)`, so given ``s``
the output is Gaussian with

.. math::

    \mu_t(s) = A_t y, \qquad
    \Sigma_t(s) = s \big(K_{**} - A_t K_{X*} - K_{*X} A_t^\top + A_t K A_t^\top\big).

Both kernels scale with ``s``. So :math:`\Theta_{*X}\Theta^{-1}` does not depend on ``s``,
but the learning rate is effectively :math:`\eta s`, and at finite ``t`` the mean depends
on ``s``. At :math:`t = \infty` the exponential vanishes and the predictive becomes a scale
mixture with one mean, the trained counterpart of the scale mixtures of NNGPs of Lee, Yun,
Yang and Lee ("Scale Mixtures of Neural Network Gaussian Processes", ICLR 2022):

.. math::

    f_\infty(x_*) \sim \int \mathcal N\big(\Theta_{*X}\Theta^{-1} y,\; s\,\Sigma_\infty(1)\big)\, p(s)\, ds .

Training never weighs ``s`` by a likelihood of the data, so the mixing distribution is the
prior :math:`p(s)` itself, not a posterior. An inverse-gamma prior with shape
:math:`\alpha` gives a Student-t with :math:`2\alpha` degrees of freedom at
:math:`t = \infty`. Trained readout at :math:`t = \infty` reproduces noise-free GP regression
with kernel :math:`s K`.

NOTE: the factor ``s`` multiplies the output, so it reaches every gradient. Drawing only
the initial last-layer weights with variance ``s`` and training them directly would leave
the readout gradient, and so part of the NTK, without the factor ``s``. That network is
not modelled here.

The algebra uses the eigendecomposition :math:`\Theta = U \Lambda U^\top`, so that
:math:`\Theta^{-1}(I - e^{-\eta s \Theta t}) = U \operatorname{diag}(g_j) U^\top` with
:math:`g_j = (1 - e^{-\eta s \lambda_j t}) / \lambda_j`, computed with ``expm1``. One
decomposition serves every training time and every scale.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, Float

from probnn.kernels.base import Kernel, check_inputs
from probnn.kernels.linalg import CholeskyResult, factor_with_jitter, report_cholesky
from probnn.kernels.nngp import NNGP, NTK
from probnn.priors.scale import check_scale_prior, prior_parameters, rebuild_prior
from probnn.processes._data import check_training_data, float_dtype, warn_precision
from probnn.samplers.scale import ScaleNodes, scale_quadrature

#: Accepted values of ``train``: every layer, or only the last layer's weights and bias.
TRAINED_LAYERS = ("all", "readout")


def network_kernels(kernel: NNGP | NTK) -> tuple[NNGP, NTK]:
    """Return the NNGP and the NTK of the network that ``kernel`` describes.

    Both get the depth, activation, weight and bias variances, output variance,
    lengthscale and input offset of ``kernel``, so they belong to one network.

    Raises
    ------
    ValueError
        If ``kernel`` is not an :class:`~probnn.kernels.NNGP` or
        :class:`~probnn.kernels.NTK`, or if it is normalised.
    """
    if not isinstance(kernel, (NNGP, NTK)):
        raise ValueError(
            "kernel must be probnn.kernels.NNGP or probnn.kernels.NTK, which describe a fully "
            f"connected network; got {type(kernel).__name__}."
        )
    if kernel.normalize:
        raise ValueError(
            "kernel has normalize=True, which divides the NNGP by its diagonal. No network "
            "computes that kernel and the NTK ignores the option, so the two kernels would "
            "describe different networks. Pass normalize=False."
        )
    settings = {
        "depth": kernel.depth,
        "activation": kernel.activation,
        "weight_variance": kernel.weight_variance,
        "bias_variance": kernel.bias_variance,
        "variance": kernel.variance,
        "lengthscale": kernel.lengthscale,
        "input_offset": kernel.input_offset,
    }
    return NNGP(**settings), NTK(**settings)


def _check_training_time(value) -> tuple[np.ndarray, bool]:
    """Return the training times as a 1-d float array and whether a scalar was given."""
    try:
        times = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"training_time must be a number of gradient steps or a 1-d array of them, got {value!r}."
        ) from None
    if times.ndim > 1 or times.size == 0:
        raise ValueError(
            f"training_time must be a scalar or a non-empty 1-d array, got shape {times.shape}. "
            "Pass one time, or a flat list of times."
        )
    if np.any(np.isnan(times)) or np.any(times < 0):
        raise ValueError(
            f"training_time must be >= 0 (np.inf for the end of training), got {value!r}."
        )
    return np.atleast_1d(times), times.ndim == 0


def _check_nonnegative(value, name: str, *, positive: bool = False) -> float:
    """Return ``value`` as a float after checking that it is a finite scalar >= 0 (or > 0)."""
    if isinstance(value, (bool, np.bool_)) or np.ndim(value) != 0:
        raise ValueError(f"{name} must be a real scalar, got {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real scalar, got {value!r}.") from None
    bound_ok = number > 0 if positive else number >= 0
    if not np.isfinite(number) or not bound_ok:
        relation = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be finite and {relation}, got {value!r}.")
    return number


class GradientTrainedEnsemble(eqx.Module):
    r"""Infinite ensemble of wide networks trained by gradient descent on squared error.

    See the module docstring for the formulas. Without ``scale_prior`` the predictive is
    Gaussian. With it, each ensemble member draws its last-layer variance ``s`` from
    ``scale_prior``, and the predictive is a mixture over ``s``. Training does not
    condition ``s`` on the data, so the mixture integrates over the prior alone, by
    :func:`probnn.samplers.scale.scale_quadrature` with ``n = 0`` and ``quadratic = 0``.

    Parameters
    ----------
    kernel : NNGP or NTK
        Either kernel of the network; the other is built with the same settings by
        :func:`network_kernels`. Its ``variance`` multiplies ``s``, so keep it at 1 when
        a prior is given.
    train : {"all", "readout"}
        Train every layer (the NTK drives training) or only the last layer's weights and
        bias (the NNGP kernel drives training).
    training_time : float or array of shape (T,)
        Time ``t >= 0`` in gradient steps; ``np.inf`` for the end of training. An array
        gives the predictive at each time, with a leading axis of size ``T``.
    learning_rate : float
        Step size :math:`\eta > 0` of gradient descent on
        :math:`\tfrac12 \lVert f(X) - y \rVert^2` (a sum, not a mean, over the data).
        Only the product :math:`\eta t` matters.
    scale_prior : numpyro distribution, optional
        Prior of the last-layer variance ``s`` on the positive half-line.
    noise : float
        Observation-noise variance added to the predictive when ``latent=False``. It does
        not enter training, whose loss has no noise term.
    diag_reg : float
        Ridge term added to the diagonal of the training kernel, as a multiple of its mean
        diagonal. Zero gives the gradient-flow result; a positive value replaces it by
        the dynamics of the regularised kernel.
    num_nodes : int
        Quadrature nodes over ``s``; the predictive has this many components per input.

    Notes
    -----
    The formulas are the limit of small steps. Discrete gradient descent follows them
    while :math:`\eta s \lambda_{\max}(\Theta) \ll 1` and diverges once that product
    exceeds 2, which happens for some ``s`` under any prior with unbounded support.

    Examples
    --------
    >>> import jax, numpy as np
    >>> jax.config.update("jax_enable_x64", True)
    >>> from probnn.kernels import NTK
    >>> X = np.linspace(-1, 1, 8)[:, None]; y = np.sin(3 * X[:, 0])
    >>> model = GradientTrainedEnsemble(NTK(depth=2), training_time=[10.0, np.inf], learning_rate=0.1)
    >>> model.condition(X, y).predict(X[:3], latent=True).mean.shape
    (2, 3)
    """

    nngp: NNGP
    tangent_kernel: Kernel
    training_time: Float[Array, " T"]
    learning_rate: Float[Array, ""]
    noise: Float[Array, ""]
    diag_reg: Float[Array, ""]
    scale_prior: dist.Distribution | None
    train: str = eqx.field(static=True)
    num_nodes: int = eqx.field(static=True)
    scalar_time: bool = eqx.field(static=True)

    def __init__(
        self,
        kernel: NNGP | NTK,
        *,
        train: str = "all",
        training_time=np.inf,
        learning_rate: float = 1.0,
        scale_prior: dist.Distribution | None = None,
        noise: float = 0.0,
        diag_reg: float = 0.0,
        num_nodes: int = 128,
    ):
        nngp, ntk = network_kernels(kernel)
        if train not in TRAINED_LAYERS:
            raise ValueError(f"train must be one of {TRAINED_LAYERS}, got {train!r}.")
        times, scalar_time = _check_training_time(training_time)
        rate = _check_nonnegative(learning_rate, "learning_rate", positive=True)
        noise_value = _check_nonnegative(noise, "noise")
        regularisation = _check_nonnegative(diag_reg, "diag_reg")
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 8:
            raise ValueError(f"num_nodes must be an integer >= 8, got {num_nodes!r}.")
        dtype = float_dtype()
        self.nngp = nngp
        # Training only the readout moves the output along the last-layer features, whose
        # kernel is the NNGP kernel itself (see the module docstring).
        self.tangent_kernel = ntk if train == "all" else nngp
        self.training_time = jnp.asarray(times, dtype)
        self.learning_rate = jnp.asarray(rate, dtype)
        self.noise = jnp.asarray(noise_value, dtype)
        self.diag_reg = jnp.asarray(regularisation, dtype)
        if scale_prior is None:
            self.scale_prior = None
        else:
            # Array parameters are traced under jit, where Python floats would be static and
            # recompile the programs for every new prior.
            prior = check_scale_prior(scale_prior)
            parameters = {name: jnp.asarray(value, dtype) for name, value in prior_parameters(prior).items()}
            self.scale_prior = rebuild_prior(prior, parameters)
        self.train = train
        self.num_nodes = num_nodes
        self.scalar_time = scalar_time

    def condition(self, X, y) -> "TrainedEnsemblePredictive":
        """Decompose the training kernel for the data the ensemble is trained on.

        Targets are used as given: the networks fit ``y`` itself, with no standardisation.

        Parameters
        ----------
        X : array of shape (n, d) or (n,)
        y : array of shape (n,) or (n, 1)

        Returns
        -------
        TrainedEnsemblePredictive
            An immutable pytree with ``predict``, ``mean_and_covariance`` and
            ``sample_functions``.
        """
        X, y = check_training_data(X, y)
        warn_precision(X, y)
        dtype = float_dtype()
        dim = X.shape[1]
        model = eqx.tree_at(
            lambda m: (m.nngp, m.tangent_kernel),
            self,
            (self.nngp.with_input_dim(dim), self.tangent_kernel.with_input_dim(dim)),
        )
        return _condition_program(model, jnp.asarray(X, dtype), jnp.asarray(y, dtype))

    def _scale_nodes(self, dtype) -> ScaleNodes:
        if self.scale_prior is None:
            # A single component with s = 1 and weight 1 keeps one code path for both cases.
            zero = jnp.zeros(1, dtype)
            return ScaleNodes(zero, zero, jnp.zeros((), dtype))
        no_data = jnp.zeros((), dtype)
        return scale_quadrature(self.scale_prior.log_prob, no_data, no_data, self.num_nodes)


@eqx.filter_jit
def _condition_program(model: GradientTrainedEnsemble, X, y):
    tangent_gram = model.tangent_kernel.gram(X)
    n = X.shape[0]
    if n > 0:
        ridge = model.diag_reg * jnp.mean(jnp.diagonal(tangent_gram))
        tangent_gram = tangent_gram + ridge * jnp.eye(n, dtype=tangent_gram.dtype)
    eigenvalues, eigenvectors = jnp.linalg.eigh(tangent_gram)
    # Directions with eigenvalue at rounding level are null directions of a positive
    # semi-definite kernel, along which the cross-kernel to any input vanishes too. Giving
    # them gain 0 is the pseudo-inverse, the exact limit. The cutoff is numpy's matrix_rank tolerance.
    cutoff = n * jnp.finfo(eigenvalues.dtype).eps * jnp.max(eigenvalues, initial=0.0)
    eigenvalues = jnp.where(eigenvalues > cutoff, eigenvalues, 0.0)
    return TrainedEnsemblePredictive(
        model=model,
        X=X,
        y=y,
        eigenvalues=eigenvalues,
        eigenvectors=eigenvectors,
        projected_targets=eigenvectors.T @ y,
        nngp_gram=model.nngp.gram(X),
        scale_nodes=model._scale_nodes(X.dtype),
    )


class TrainedEnsemblePredictive(eqx.Module):
    """Predictive distribution of a :class:`GradientTrainedEnsemble` trained on ``(X, y)``.

    Predictions have a leading time axis when the model was given an array of training
    times. ``scale_nodes`` contains the quadrature over the prior of ``s``, or a single node
    at ``s = 1`` without a prior.
    """

    model: GradientTrainedEnsemble
    X: Float[Array, "N d"]
    y: Float[Array, " N"]
    eigenvalues: Float[Array, " N"]
    eigenvectors: Float[Array, "N N"]
    projected_targets: Float[Array, " N"]
    nngp_gram: Float[Array, "N N"]
    scale_nodes: ScaleNodes

    @property
    def training_time(self) -> Array:
        """Training times in gradient steps, as given to the model."""
        times = self.model.training_time
        return times[0] if self.model.scalar_time else times

    def _check_test_inputs(self, X_new):
        X_new = check_inputs(X_new, "X_new")
        dim = self.X.shape[1]
        if X_new.shape[1] != dim:
            raise ValueError(
                f"X_new has {X_new.shape[1]} columns, but the ensemble was trained on {dim}. "
                f"Pass X_new with shape (m, {dim}), not {X_new.shape}."
            )
        return jnp.asarray(X_new, dtype=self.X.dtype)

    def _squeeze_time(self, array):
        return array[0] if self.model.scalar_time else array

    # -- the algebra -----------------------------------------------------------------

    def _gains(self, scales):
        """``g_j = (1 - exp(-eta s lambda_j t)) / lambda_j`` with shape ``(T, K, N)``."""
        positive = self.eigenvalues > 0
        safe = jnp.where(positive, self.eigenvalues, 1.0)
        exposure = self.model.learning_rate * self.model.training_time[:, None, None] * scales[None, :, None]
        finite = jnp.isfinite(exposure)
        fitted = jnp.where(finite, -jnp.expm1(-safe * jnp.where(finite, exposure, 0.0)), 1.0)
        return jnp.where(positive, fitted / safe, 0.0)

    def _dynamics_matrices(self, X_new, scales):
        """Means ``A_t y`` with shape ``(T, K, m)`` and the matrices ``A_t`` with shape ``(T, K, m, N)``."""
        tangent_cross = self.model.tangent_kernel.cross(X_new, self.X)
        gains = self._gains(scales)
        weighted = (tangent_cross @ self.eigenvectors)[None, None] * gains[:, :, None, :]
        means = weighted @ self.projected_targets
        return means, weighted @ self.eigenvectors.T

    def _marginal_moments(self, X_new):
        """Mean and latent variance of each component, both with shape ``(T, K, m)``."""
        scales = jnp.exp(self.scale_nodes.log_scales)
        means, dynamics = self._dynamics_matrices(X_new, scales)
        nngp_cross = self.model.nngp.cross(X_new, self.X)
        prior_variance = self.model.nngp.diag(X_new)
        cross_term = jnp.sum(dynamics * nngp_cross, axis=-1)
        quadratic_term = jnp.sum((dynamics @ self.nngp_gram) * dynamics, axis=-1)
        variance = prior_variance - 2.0 * cross_term + quadratic_term
        # Cancellation can leave tiny negative values where training pins the output down.
        variance = jnp.maximum(variance, 0.0) * scales[None, :, None]
        return means, variance

    def _joint_moments(self, X_new, log_scale):
        """Mean ``(T m,)`` and covariance ``(T m, T m)`` over all times, given ``s``.

        The same member at two times shares its initialisation, so the blocks between
        times are ``s (K_** - A_t K_X* - K_*X A_u^T + A_t K A_u^T)``.
        """
        scale = jnp.exp(log_scale)
        means, dynamics = self._dynamics_matrices(X_new, scale[None])
        num_times, m = means.shape[0], X_new.shape[0]
        mean = means[:, 0].reshape(num_times * m)
        stacked = dynamics[:, 0].reshape(num_times * m, -1)
        nngp_cross = jnp.tile(self.model.nngp.cross(X_new, self.X), (num_times, 1))
        prior = jnp.tile(self.model.nngp.gram(X_new), (num_times, num_times))
        correction = stacked @ nngp_cross.T
        covariance = prior - correction - correction.T + stacked @ self.nngp_gram @ stacked.T
        return mean, scale * 0.5 * (covariance + covariance.T)

    # -- public predictions ----------------------------------------------------------

    def predict(self, X_new, latent: bool = False):
        """Predictive distribution of the trained ensemble's output at ``X_new``.

        Parameters
        ----------
        X_new : array of shape (m, d) or (m,)
        latent : bool
            If true, the distribution of the network output; otherwise ``noise`` is added
            to every component's variance.

        Returns
        -------
        numpyro.distributions.Normal or numpyro.distributions.MixtureSameFamily
            ``Normal`` without a scale prior. With one, a mixture with one ``Normal``
            component per node ``s_k`` of ``scale_nodes``, of mean ``mu_t(s_k)`` and
            variance ``Sigma_t(s_k)``. Batch shape ``(m,)``, or ``(T, m)`` for ``T``
            training times.

        NOTE: the computation builds arrays of ``T * num_nodes * m * n`` numbers for ``n``
        training points, so predict at many inputs in chunks.
        """
        X_new = self._check_test_inputs(X_new)
        means, variances = _marginal_program(self, X_new)
        if not latent:
            variances = variances + self.model.noise
        scales = jnp.sqrt(jnp.maximum(variances, jnp.finfo(variances.dtype).tiny))
        means, scales = self._squeeze_time(means), self._squeeze_time(scales)
        if self.model.scale_prior is None:
            return dist.Normal(means[..., 0, :], scales[..., 0, :])
        # Components move to the last axis, as MixtureSameFamily expects.
        means, scales = jnp.moveaxis(means, -2, -1), jnp.moveaxis(scales, -2, -1)
        logits = jnp.broadcast_to(self.scale_nodes.log_weights, means.shape)
        return dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(means, scales))

    def mean_and_covariance(self, X_new, scale: float = 1.0) -> tuple[Array, Array]:
        r"""Mean and covariance of the latent output at ``X_new`` given the last-layer variance ``s``.

        Parameters
        ----------
        X_new : array of shape (m, d) or (m,)
        scale : float
            The factor ``s > 0`` on the kernel's variance. It need not be a quadrature node.

        Returns
        -------
        mean : array of shape (m,) or (T, m)
            :math:`\mu_t(s)`.
        covariance : array of shape (m, m) or (T, m, m)
            :math:`\Sigma_t(s)` at each training time.
        """
        X_new = self._check_test_inputs(X_new)
        log_scale = jnp.log(_check_nonnegative(scale, "scale", positive=True))
        mean, covariance = _joint_program(self, X_new, jnp.asarray(log_scale, X_new.dtype))
        num_times, m = self.model.training_time.shape[0], X_new.shape[0]
        blocks = covariance.reshape(num_times, m, num_times, m)
        diagonal_blocks = blocks[jnp.arange(num_times), :, jnp.arange(num_times), :]
        return self._squeeze_time(mean.reshape(num_times, m)), self._squeeze_time(diagonal_blocks)

    def sample_functions(self, key, X_new, num_samples: int) -> Array:
        """Draw outputs of ensemble members at ``X_new``.

        Each draw picks ``s`` from ``scale_nodes`` (by weight), then a Gaussian output
        jointly over ``X_new`` and over all training times, since one member's outputs at
        different times share its initialisation.

        Returns
        -------
        array of shape (num_samples, m), or (num_samples, T, m) for ``T`` training times
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        X_new = self._check_test_inputs(X_new)
        draws, jitter, success = _sample_program(self, key, X_new, num_samples)
        result = CholeskyResult(jnp.zeros((0, 0), X_new.dtype), jitter, success)
        report_cholesky(result, "the covariance of the trained ensemble's outputs at X_new")
        num_times, m = self.model.training_time.shape[0], X_new.shape[0]
        draws = draws.reshape(num_samples, num_times, m)
        return draws[:, 0] if self.model.scalar_time else draws


@eqx.filter_jit
def _marginal_program(predictive: TrainedEnsemblePredictive, X_new):
    return predictive._marginal_moments(X_new)


@eqx.filter_jit
def _joint_program(predictive: TrainedEnsemblePredictive, X_new, log_scale):
    return predictive._joint_moments(X_new, log_scale)


@eqx.filter_jit
def _sample_program(predictive: TrainedEnsemblePredictive, key, X_new, num_samples: int):
    nodes = predictive.scale_nodes
    node_key, normal_key = jax.random.split(key)
    index = jax.random.categorical(node_key, nodes.log_weights, shape=(num_samples,))
    size = predictive.model.training_time.shape[0] * X_new.shape[0]
    z = jax.random.normal(normal_key, (num_samples, size), dtype=X_new.dtype)

    # At finite times the mean and covariance depend on s, so each node needs its own
    # factor. Scanning over nodes keeps one covariance matrix in memory at a time.
    def add_node(carry, node):
        draws, jitter, success = carry
        mean, covariance = predictive._joint_moments(X_new, nodes.log_scales[node])
        result = factor_with_jitter(covariance)
        draws = jnp.where((index == node)[:, None], mean + z @ result.factor.T, draws)
        return (draws, jnp.maximum(jitter, result.jitter), success & result.success), None

    init = (jnp.zeros_like(z), jnp.zeros((), X_new.dtype), jnp.array(True))
    (draws, jitter, success), _ = jax.lax.scan(add_node, init, jnp.arange(nodes.log_scales.shape[0]))
    return draws, jitter, success
