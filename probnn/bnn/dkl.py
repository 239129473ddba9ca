r"""Deep kernel learning: a Gaussian process on learned features.

Deep kernel learning (Wilson, Hu, Salakhutdinov and Xing, "Deep Kernel Learning", AISTATS
2016) puts a stationary kernel on the output of a network :math:`g`,

.. math::

    k(x, x') = k_{\mathrm{base}}\big(g(x), g(x')\big),

and trains the network weights, the base kernel's hyperparameters and the noise variance
together by maximising the exact log marginal likelihood

.. math::

    \log p(y \mid X) = -\tfrac12 y^\top A^{-1} y - \tfrac12 \log|A| - \tfrac n2 \log 2\pi,
    \qquad A = k(X, X) + \epsilon I .

Given the trained parameters, prediction is ordinary GP regression with the deep kernel.

On a few dozen points a flexible network can raise the marginal likelihood by mapping
unexplored inputs close to training points in feature space, and the GP then predicts with
overconfident error bars there (feature collapse). Here the feature map starts as the
identity, :math:`g(x) = x P + r(x)`, with a fixed projection ``P`` (the identity when the
feature dimension equals the input dimension) and a residual network ``r`` whose readout
starts at zero. The kernel hyperparameters are first fitted as an exact GP on :math:`x P`.
By default ``r`` is Lipschitz with constant 0.2, so feature distances stay within 20% of
input distances. :class:`DeepKernelGP` gives the measured effect of each choice.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from jaxtyping import Array, Float

from probnn.kernels.base import Kernel, _log_normal_log_density, check_inputs, positive_array
from probnn.kernels.linalg import NumericalWarning, gaussian_log_det_and_quadratic
from probnn.kernels.stationary import RBF, Matern52
from probnn.nets.mlp import MLP, check_activation, check_widths
from probnn.processes._data import (
    PaddedData,
    Standardizer,
    check_training_data,
    float_dtype,
    masked_covariance,
    pad_training_data,
    warn_precision,
)
from probnn.processes.exact import NOISE_LOWER_BOUND, GaussianPosterior, GaussianProcess

#: Stationary kernels available as the base kernel, by name.
BASE_KERNELS = {"rbf": RBF, "matern52": Matern52}


class ResidualFeatureMap(eqx.Module):
    r"""Feature map :math:`g(x) = x P + r(x)` that starts as a linear map of the inputs.

    ``P`` is a fixed ``(d, k)`` matrix: the identity when ``k = d``, otherwise a random
    matrix with orthonormal rows (``k > d``, distances preserved) or columns (``k < d``, a
    random projection). ``r`` is an MLP with ``k`` outputs whose readout weights and bias
    start at zero, so at initialisation :math:`g(x) = x P` exactly. Training changes only
    ``r``.

    With ``lipschitz = L`` each of the ``J`` weight matrices of ``r`` is rescaled in the
    forward pass to spectral norm at most :math:`L^{1/J}`, so ``r`` is ``L``-Lipschitz for
    1-Lipschitz activations (``tanh``, ``relu``) and, for ``k = d``,
    :math:`(1 - L)\lVert x - x' \rVert \le \lVert g(x) - g(x') \rVert \le (1 + L)\lVert x - x' \rVert`:
    features can neither collapse nor separate without bound (the residual bi-Lipschitz
    construction of van Amersfoort et al., "On Feature Collapse and Deep Kernel Learning
    for Single Forward Pass Uncertainty", 2021).

    Parameters
    ----------
    in_features : int
    num_features : int
        Feature dimension ``k``.
    widths : sequence of int
        Hidden-layer widths of ``r``.
    key : jax.random key
    activation : str
        Activation of ``r``'s hidden layers.
    lipschitz : float or None
        Bound on the Lipschitz constant of ``r``; ``None`` leaves ``r`` unconstrained.
    dtype : dtype, optional
        Parameter dtype; the float dtype JAX computes in by default, because the features
        enter the Cholesky factorisation of the Gram matrix.
    """

    projection: Float[Array, "d k"]
    network: MLP
    lipschitz: float | None = eqx.field(static=True)

    def __init__(self, in_features: int, num_features: int, widths=(50, 50), *, key, activation: str = "tanh", lipschitz=None, dtype=None):
        self.lipschitz = lipschitz
        dtype = float_dtype() if dtype is None else dtype
        projection_key, network_key = jax.random.split(key)
        if num_features == in_features:
            projection = jnp.eye(in_features, dtype=dtype)
        else:
            # QR of a Gaussian matrix gives orthonormal columns; transposing gives rows.
            tall = max(in_features, num_features), min(in_features, num_features)
            q, _ = jnp.linalg.qr(jax.random.normal(projection_key, tall, dtype))
            projection = q if in_features > num_features else q.T
        network = MLP(in_features, widths, key=network_key, activation=activation, out_features=num_features, dtype=dtype)
        zero_readout = (jnp.zeros_like(network.weights[-1]), jnp.zeros_like(network.biases[-1]))
        self.network = eqx.tree_at(lambda m: (m.weights[-1], m.biases[-1]), network, zero_readout)
        self.projection = projection

    @property
    def in_features(self) -> int:
        return self.projection.shape[0]

    @property
    def num_features(self) -> int:
        return self.projection.shape[1]

    def features(self, X: Float[Array, "n d"]) -> Float[Array, "n k"]:
        """Compute :math:`g(X) = X P + r(X)`."""
        X = X.astype(self.projection.dtype)
        network = self.network
        if self.lipschitz is not None:
            bound = self.lipschitz ** (1.0 / len(network.weights))
            weights = tuple(_limit_spectral_norm(W, bound) for W in network.weights)
            network = eqx.tree_at(lambda m: m.weights, network, weights)
        return X @ self.projection + network(X)

    def trainable(self):
        """Boolean pytree marking the leaves that training changes: ``r``'s weights and biases."""
        spec = jax.tree.map(eqx.is_inexact_array, self)
        return eqx.tree_at(lambda f: f.projection, spec, False)


def _limit_spectral_norm(W, bound, num_iterations: int = 20):
    """Rescale ``W`` to spectral norm at most ``bound``.

    The norm is estimated by power iteration from a fixed start, as in spectral
    normalisation. The estimate is a lower bound, so the limit can be exceeded slightly
    when the iteration has not converged.
    """
    u = jnp.ones(W.shape[0], W.dtype) / jnp.sqrt(W.shape[0])
    tiny = jnp.finfo(W.dtype).tiny
    Wc = jax.lax.stop_gradient(W)
    for _ in range(num_iterations):
        v = Wc.T @ u
        v = v / (jnp.linalg.norm(v) + tiny)
        u = Wc @ v
        u = u / (jnp.linalg.norm(u) + tiny)
    sigma = u @ W @ v
    return W * (bound / jnp.maximum(sigma, bound))


class DeepKernel(Kernel):
    r"""Stationary kernel on learned features, :math:`k(x, x') = k_{\mathrm{base}}(g(x), g(x'))`.

    Parameters
    ----------
    feature_map : FeatureMap
        A pytree with ``features(X) -> (n, k)``, e.g. :class:`ResidualFeatureMap`.
    base_kernel : str
        ``"rbf"`` or ``"matern52"``.
    lengthscale : float or array of shape (k,)
        Lengthscales of the base kernel on the features.
    variance : float
        Output scale of the base kernel.
    """

    lengthscale: Float[Array, "..."]
    feature_map: eqx.Module
    base_kernel: str = eqx.field(static=True)

    def __init__(self, feature_map, base_kernel: str = "rbf", lengthscale=1.0, variance=1.0):
        self.base_kernel = _check_base_kernel(base_kernel)
        self.feature_map = feature_map
        self.lengthscale = positive_array(lengthscale, "lengthscale")
        self.variance = positive_array(variance, "variance")
        if self.variance.ndim != 0:
            raise ValueError(f"variance must be a scalar, got shape {self.variance.shape}.")

    def base(self) -> Kernel:
        """Build the base kernel with this kernel's lengthscale and variance (works on traced values)."""
        template = BASE_KERNELS[self.base_kernel]()
        return eqx.tree_at(lambda k: (k.lengthscale, k.variance), template, (self.lengthscale, self.variance))

    def features(self, X):
        return self.feature_map.features(X)

    def cross(self, X1, X2):
        return self.base().cross(self.features(X1), self.features(X2))

    def diag(self, X):
        return jnp.full(X.shape[0], self.variance, dtype=jnp.result_type(X, self.variance))

    def gram(self, X):
        return self.base().gram(self.features(X))

    def log_prior(self):
        """Log hyperprior of the base kernel on the features. The network has no hyperprior."""
        return self.base().log_prior()

    def with_input_dim(self, dim: int) -> "DeepKernel":
        in_features = getattr(self.feature_map, "in_features", dim)
        if in_features != dim:
            raise ValueError(
                f"The feature map takes {in_features} inputs but the data have {dim} columns; "
                "build the model for the data's dimension."
            )
        return self


def _check_base_kernel(name: str) -> str:
    if name not in BASE_KERNELS:
        raise ValueError(f"Unknown base_kernel {name!r}; choose one of {', '.join(BASE_KERNELS)}.")
    return name


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


class TrainingHistory(NamedTuple):
    """Objective of each restart at every Adam step, and the restart that was kept.

    The objective is the negative log marginal likelihood plus hyperprior, per training
    point, on the standardised targets. ``objective`` has shape ``(restarts, steps)``.
    """

    objective: Array
    best_restart: Array


class _Settings(NamedTuple):
    """Static settings of the training program (hashable, so they key its compilation)."""

    num_steps: int
    learning_rate: float
    hyperprior: bool
    learn_noise: bool
    noise_lower_bound: float


class DeepKernelGP(eqx.Module):
    r"""Gaussian process with a deep kernel, trained by the exact marginal likelihood.

    The kernel is ``base_kernel`` on the features of a :class:`ResidualFeatureMap`
    :math:`g(x) = x P + r(x)`, where ``r`` is an MLP of hidden ``widths`` whose readout
    starts at zero. A full fit

    1. initialises ``g`` (so :math:`g(x) = x P`) and fits the base kernel and noise as an
       exact :class:`~probnn.processes.GaussianProcess` on :math:`x P` (L-BFGS with
       ``pretrain_restarts`` starts), so the deep kernel starts at that GP's optimum;
    2. trains the network weights, the base kernel's lengthscales (one per feature) and
       variance, and the noise together with Adam on the full batch for ``num_steps``
       steps. The objective is the exact log marginal likelihood of the standardised
       targets plus the weak hyperpriors of :class:`~probnn.processes.GaussianProcess`
       (when ``hyperprior``). The parameters with the best objective seen are kept, so the
       trained model's objective is never worse than that of the GP it started from.

    A warm fit (``num_restarts=1`` on a trained model) runs step 2 only, for
    ``warm_steps`` steps from the current parameters.

    Inputs should be scaled to about the unit cube (the Bayesian optimization loop does
    this): the network's activations and the lengthscale hyperprior assume that scale.

    Parameters
    ----------
    widths : sequence of int
        Hidden-layer widths of the residual network.
    num_features : int or None
        Feature dimension ``k``; ``None`` uses the input dimension, so ``P`` is the identity.
    activation : str
        Hidden activation of the residual network (see :data:`probnn.nets.ACTIVATIONS`).
    base_kernel : str
        ``"rbf"`` or ``"matern52"``.
    lengthscale, variance : float
        Initial base-kernel hyperparameters (the starting point of the pretraining GP).
    noise : float or None
        Noise variance on the standardised scale; ``None`` learns it.
    noise_lower_bound : float
        Lower bound of the learned noise variance (standardised scale).
    num_restarts : int
        Networks initialised independently in a full fit; the one with the best objective
        is kept.
    num_steps : int
        Adam steps of a full fit.
    warm_steps : int
        Adam steps of a warm fit.
    learning_rate : float
        Adam step size.
    pretrain_restarts : int
        L-BFGS starts of the pretraining GP.
    lipschitz : float or None
        Bound below 1 on the Lipschitz constant of ``r`` (see :class:`ResidualFeatureMap`),
        which keeps feature distances between ``1 - lipschitz`` and ``1 + lipschitz`` times
        the input distances (for ``num_features = d``). ``None`` leaves ``r`` unconstrained.
    hyperprior : bool
        Add the weak hyperpriors on the base kernel and noise (MAP type II).

    Notes
    -----
    On a few dozen points the marginal likelihood of a flexible feature map rewards moving
    unexplored regions close to training points in feature space while the lengthscales
    grow, which makes predictions overconfident away from the data (Ober, Rasmussen and van
    der Wilk, "The Promises and Pitfalls of Deep Kernel Learning", UAI 2021). The default
    ``lipschitz=0.2`` prevents that collapse, at the price of flexibility: a 1-d step is
    then fitted no better than by a GP. Measured on one CPU core with the defaults
    otherwise (test NLL on the standardised scale, mean over 4 random designs, 500
    uniform test points; BO: median regret after 10 Sobol points and 40 log-EI iterations
    on Hartmann-6 over 10 seeds):

    ======================  ======  ============  ===============  ===============
    data                    RBF GP  DKL default   lipschitz=None   random MLP map
    ======================  ======  ============  ===============  ===============
    Hartmann-6, n=20 (NLL)  3.7     6.9           106              40
    Hartmann-6, n=50 (NLL)  2.3     4.0           179              31
    1-d step, n=30 (NLL)    0.48    0.48          0.06             -0.08
    Hartmann-6 BO regret    0.22    0.41          0.76             0.62
    ======================  ======  ============  ===============  ===============

    "random MLP map" is the usual DKL start: an MLP with ``d`` outputs, LeCun-normal
    weights, no residual path and no pretraining. The step data are
    :math:`y = 1[x > 0.5] + \varepsilon` with :math:`\varepsilon \sim N(0, 0.05^2)`.

    References
    ----------
    A. G. Wilson, Z. Hu, R. Salakhutdinov and E. P. Xing, "Deep Kernel Learning",
    AISTATS 2016.
    """

    kernel: DeepKernel | None
    noise: Float[Array, ""]
    widths: tuple[int, ...] = eqx.field(static=True)
    num_features: int | None = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    base_kernel: str = eqx.field(static=True)
    initial_lengthscale: float = eqx.field(static=True)
    initial_variance: float = eqx.field(static=True)
    initial_noise: float = eqx.field(static=True)
    learn_noise: bool = eqx.field(static=True)
    noise_lower_bound: float = eqx.field(static=True)
    num_restarts: int = eqx.field(static=True)
    num_steps: int = eqx.field(static=True)
    warm_steps: int = eqx.field(static=True)
    learning_rate: float = eqx.field(static=True)
    pretrain_restarts: int = eqx.field(static=True)
    lipschitz: float | None = eqx.field(static=True)
    hyperprior: bool = eqx.field(static=True)

    def __init__(
        self,
        widths=(50, 50),
        num_features: int | None = None,
        activation: str = "tanh",
        base_kernel: str = "rbf",
        *,
        lengthscale: float = 1.0,
        variance: float = 1.0,
        noise: float | None = None,
        noise_lower_bound: float = NOISE_LOWER_BOUND,
        num_restarts: int = 1,
        num_steps: int = 500,
        warm_steps: int = 100,
        learning_rate: float = 3e-3,
        pretrain_restarts: int = 3,
        lipschitz: float | None = 0.2,
        hyperprior: bool = True,
    ):
        self.widths = check_widths(widths)
        self.num_features = None if num_features is None else _positive_int(num_features, "num_features")
        self.activation = check_activation(activation)
        self.base_kernel = _check_base_kernel(base_kernel)
        self.initial_lengthscale = float(positive_array(lengthscale, "lengthscale"))
        self.initial_variance = float(positive_array(variance, "variance"))
        if not (np.isfinite(noise_lower_bound) and noise_lower_bound >= 0):
            raise ValueError(f"noise_lower_bound must be finite and >= 0, got {noise_lower_bound!r}.")
        self.noise_lower_bound = float(noise_lower_bound)
        self.learn_noise = noise is None
        if noise is None:
            noise_value = max(1e-2, 10.0 * noise_lower_bound)
        else:
            noise_value = float(noise)
            if not (np.isfinite(noise_value) and noise_value >= noise_lower_bound):
                raise ValueError(
                    f"noise must be a finite variance >= noise_lower_bound={noise_lower_bound!r}, or None "
                    f"to learn it; got {noise!r}."
                )
        self.initial_noise = noise_value
        self.noise = jnp.asarray(noise_value, float_dtype())
        self.num_restarts = _positive_int(num_restarts, "num_restarts")
        self.num_steps = _positive_int(num_steps, "num_steps")
        self.warm_steps = _positive_int(warm_steps, "warm_steps")
        if not (np.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"learning_rate must be positive and finite, got {learning_rate!r}.")
        self.learning_rate = float(learning_rate)
        self.pretrain_restarts = _positive_int(pretrain_restarts, "pretrain_restarts")
        if lipschitz is not None and not (np.isfinite(lipschitz) and 0 < lipschitz < 1):
            raise ValueError(f"lipschitz must lie strictly between 0 and 1, or be None; got {lipschitz!r}.")
        self.lipschitz = None if lipschitz is None else float(lipschitz)
        self.hyperprior = bool(hyperprior)
        self.kernel = None

    # -- state -----------------------------------------------------------------------

    def initialize(self, in_features: int, *, key) -> "DeepKernelGP":
        """Return a copy with a fresh feature map for ``in_features`` inputs.

        The base kernel and noise take their initial values, and the residual network's
        output is zero, so the deep kernel equals the base kernel on ``x P``.
        """
        _positive_int(in_features, "in_features")
        num_features = in_features if self.num_features is None else self.num_features
        feature_map = _new_feature_map(
            in_features, num_features, self.widths, key, self.activation, self.lipschitz, float_dtype()
        )
        dtype = float_dtype()
        kernel = DeepKernel(feature_map, self.base_kernel)
        kernel = eqx.tree_at(
            lambda k: (k.lengthscale, k.variance),
            kernel,
            (jnp.full(num_features, self.initial_lengthscale, dtype), jnp.asarray(self.initial_variance, dtype)),
        )
        model = eqx.tree_at(lambda m: m.kernel, self, kernel, is_leaf=lambda x: x is None)
        return eqx.tree_at(lambda m: m.noise, model, jnp.asarray(self.initial_noise, dtype))

    def _trained_for(self, dim: int) -> bool:
        return self.kernel is not None and self.kernel.feature_map.in_features == dim

    def _settings(self, num_steps: int) -> _Settings:
        return _Settings(num_steps, self.learning_rate, self.hyperprior, self.learn_noise, self.noise_lower_bound)

    # -- fitting ---------------------------------------------------------------------

    def train(self, X, y, *, key=None, num_restarts: int | None = None):
        """Train the network, kernel hyperparameters and noise on ``(X, y)`` (see the class docstring).

        Parameters are as for :meth:`fit`.

        Returns
        -------
        model : DeepKernelGP
            The trained model, not yet conditioned on the data.
        history : TrainingHistory
            Empty (zero steps) when nothing was trained: no data, or constant targets.
        """
        X, y = check_training_data(X, y)
        warn_precision(X, y)
        return self._train(X, y, key, num_restarts)

    def _train(self, X, y, key, num_restarts):
        dim = X.shape[1]
        restarts = self.num_restarts if num_restarts is None else _positive_int(num_restarts, "num_restarts")
        warm = num_restarts == 1 and self._trained_for(dim)
        if not warm and key is None:
            raise ValueError(
                "fit needs key=jax.random.key(seed) to initialise the network (only a warm start "
                "with num_restarts=1 on a trained model needs no key); pass a key."
            )
        standardizer = Standardizer.fit(y)
        nothing_to_fit = X.shape[0] == 0 or standardizer.constant
        if warm:
            starts = [self]
        else:
            init_key, pretrain_key, network_key = jax.random.split(key, 3)
            start = self.initialize(dim, key=init_key)
            if not nothing_to_fit:
                start = start._pretrain(X, y, pretrain_key)
            starts = [start] + [start._with_fresh_network(k) for k in jax.random.split(network_key, restarts - 1)]
        if nothing_to_fit:
            return starts[0], TrainingHistory(jnp.zeros((len(starts), 0), float_dtype()), jnp.asarray(0))

        data = pad_training_data(X, (y - standardizer.mean) / standardizer.scale)
        settings = self._settings(self.warm_steps if warm else self.num_steps)
        kernels = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[m.kernel for m in starts])
        noises = jnp.stack([m.noise for m in starts])
        kernel, noise, objective, best, best_value = _train_program(kernels, noises, data, settings)
        if not np.isfinite(float(best_value)):
            warnings.warn(
                "Deep kernel training found no finite marginal likelihood; keeping the initial "
                "parameters. Check the data for duplicates, or raise noise_lower_bound.",
                NumericalWarning,
                stacklevel=3,
            )
            return starts[0], TrainingHistory(objective, best)
        model = eqx.tree_at(lambda m: (m.kernel, m.noise), starts[0], (kernel, noise))
        return model, TrainingHistory(objective, best)

    def _pretrain(self, X, y, key) -> "DeepKernelGP":
        """Fit the base kernel and noise as an exact GP on the initial features ``X P``."""
        # The features are computed on the padded inputs, whose shape only changes between
        # buckets, so no operation is compiled anew for each training-set size.
        padded = pad_training_data(X, np.zeros(X.shape[0]))
        features = np.asarray(_features_program(self.kernel, padded.X))[: X.shape[0]]
        base = BASE_KERNELS[self.base_kernel](self.initial_lengthscale, self.initial_variance)
        process = GaussianProcess(
            base.with_input_dim(features.shape[1]),
            noise=None if self.learn_noise else self.initial_noise,
            noise_lower_bound=self.noise_lower_bound,
            num_restarts=self.pretrain_restarts,
            hyperprior=self.hyperprior,
        )
        fitted = process.fit(features, y, key=key).model
        dtype = float_dtype()
        return eqx.tree_at(
            lambda m: (m.kernel.lengthscale, m.kernel.variance, m.noise),
            self,
            (
                jnp.asarray(fitted.kernel.lengthscale, dtype),
                jnp.asarray(fitted.kernel.variance, dtype),
                jnp.asarray(fitted.noise, dtype),
            ),
        )

    def _with_fresh_network(self, key) -> "DeepKernelGP":
        feature_map = self.kernel.feature_map
        fresh = _new_feature_map(
            feature_map.in_features, feature_map.num_features, self.widths, key, self.activation, self.lipschitz,
            float_dtype(),
        )
        return eqx.tree_at(lambda m: m.kernel.feature_map.network, self, fresh.network)

    def fit(self, X, y, *, key=None, num_restarts: int | None = None) -> "DeepKernelPosterior":
        """Train (see the class docstring) and condition on ``(X, y)``.

        Parameters
        ----------
        X : array of shape (n, d) or (n,)
            Inputs, best scaled to about the unit cube.
        y : array of shape (n,)
            Targets on their original scale; they are standardised internally.
        key : jax.random key
            Initialises the networks and the pretraining restarts of a full fit; a warm fit
            needs none.
        num_restarts : int, optional
            ``1`` on a model trained for the same input dimension continues from its
            parameters for ``warm_steps`` steps (as the Bayesian optimization loop does
            between full refits). ``None`` makes a full fit with the model's
            ``num_restarts``; another integer, a full fit with that many networks.

        Returns
        -------
        DeepKernelPosterior
        """
        X, y = check_training_data(X, y)
        warn_precision(X, y)
        model, _ = self._train(X, y, key, num_restarts)
        return model.condition(X, y)

    def _process(self) -> GaussianProcess:
        # The noise is fixed, and the lower bound must not exceed it.
        noise = float(self.noise)
        return GaussianProcess(self.kernel, noise=noise, noise_lower_bound=min(self.noise_lower_bound, noise))

    def _check_initialized(self, dim: int, method: str) -> None:
        if not self._trained_for(dim):
            raise ValueError(
                f"{method} needs a model initialised for {dim} inputs; call "
                f"initialize({dim}, key=...) or fit first."
            )

    def condition(self, X, y) -> "DeepKernelPosterior":
        """Condition on ``(X, y)`` with the current parameters, without training them.

        Needs an initialised model (see :meth:`initialize`). Targets are standardised as in
        :meth:`fit`.
        """
        X, y = check_training_data(X, y)
        self._check_initialized(X.shape[1], "condition")
        return DeepKernelPosterior(model=self, gp=self._process().condition(X, y))

    def log_marginal_likelihood(self, X, y) -> Array:
        """Log marginal likelihood of ``y`` at ``X`` under the current parameters, without standardisation."""
        X, y = check_training_data(X, y)
        self._check_initialized(X.shape[1], "log_marginal_likelihood")
        return self._process().log_marginal_likelihood(X, y)


@eqx.filter_jit
def _new_feature_map(in_features, num_features, widths, key, activation, lipschitz, dtype) -> ResidualFeatureMap:
    # One compiled program instead of one compilation per eager operation of the initialisation.
    return ResidualFeatureMap(
        in_features, num_features, widths, key=key, activation=activation, lipschitz=lipschitz, dtype=dtype
    )


@eqx.filter_jit
def _features_program(kernel: DeepKernel, X):
    return kernel.features(X)


def _unconstrained(kernel: DeepKernel, noise, settings: _Settings) -> dict:
    feature_map, _ = eqx.partition(kernel.feature_map, kernel.feature_map.trainable())
    u = {
        "feature_map": feature_map,
        "log_lengthscale": jnp.log(kernel.lengthscale),
        "log_variance": jnp.log(kernel.variance),
    }
    if settings.learn_noise:
        u["log_noise"] = jnp.log(noise - settings.noise_lower_bound)
    return u


def _constrained(u: dict, kernel_static: DeepKernel, noise_static, settings: _Settings):
    _, feature_static = eqx.partition(kernel_static.feature_map, kernel_static.feature_map.trainable())
    feature_map = eqx.combine(u["feature_map"], feature_static)
    # Clipping keeps exp finite when an early Adam step overshoots.
    lengthscale = jnp.exp(jnp.clip(u["log_lengthscale"], -20.0, 20.0))
    variance = jnp.exp(jnp.clip(u["log_variance"], -20.0, 20.0))
    kernel = eqx.tree_at(
        lambda k: (k.feature_map, k.lengthscale, k.variance), kernel_static, (feature_map, lengthscale, variance)
    )
    noise = noise_static
    if settings.learn_noise:
        noise = settings.noise_lower_bound + jnp.exp(jnp.clip(u["log_noise"], -40.0, 20.0))
    return kernel, noise


def _objective(u: dict, kernel_static: DeepKernel, noise_static, data: PaddedData, settings: _Settings):
    """Negative log marginal likelihood plus hyperprior, per training point."""
    kernel, noise = _constrained(u, kernel_static, noise_static, settings)
    K = kernel.gram(data.X) + noise * jnp.eye(data.X.shape[0], dtype=data.X.dtype)
    log_det, quadratic = gaussian_log_det_and_quadratic(masked_covariance(K, data.mask), data.y)
    # Padded rows contribute log 1 = 0 to the determinant and 0 to the quadratic form.
    value = -0.5 * quadratic - 0.5 * log_det - 0.5 * data.n * jnp.log(2.0 * jnp.pi)
    if settings.hyperprior:
        value = value + kernel.log_prior()
        if settings.learn_noise:
            # The noise hyperprior of GaussianProcess: log noise ~ N(-4, 1), standardised scale.
            value = value + _log_normal_log_density(jnp.log(noise), -4.0, 1.0)
    return -value / jnp.maximum(data.n, 1.0)


@eqx.filter_jit
def _train_program(kernels: DeepKernel, noises, data: PaddedData, settings: _Settings):
    optimizer = optax.adam(settings.learning_rate)

    def run(start):
        kernel, noise = start
        loss = lambda u: _objective(u, kernel, noise, data, settings)

        def step(carry, _):
            u, state, best_u, best_value = carry
            value, grads = jax.value_and_grad(loss)(u)
            better = value < best_value
            best_u = jax.tree.map(lambda new, old: jnp.where(better, new, old), u, best_u)
            best_value = jnp.where(better, value, best_value)
            updates, state = optimizer.update(grads, state, u)
            return (optax.apply_updates(u, updates), state, best_u, best_value), value

        u0 = _unconstrained(kernel, noise, settings)
        init = (u0, optimizer.init(u0), u0, jnp.asarray(jnp.inf, data.y.dtype))
        (u, _, best_u, best_value), values = jax.lax.scan(step, init, None, length=settings.num_steps)
        final_value = loss(u)
        better = final_value < best_value
        best_u = jax.tree.map(lambda new, old: jnp.where(better, new, old), u, best_u)
        best_value = jnp.where(better, final_value, best_value)
        fitted_kernel, fitted_noise = _constrained(best_u, kernel, noise, settings)
        return fitted_kernel, fitted_noise, values, best_value

    # lax.map runs the restarts one after another, because batched Cholesky calls inside
    # loops have deadlocked jaxlib's CPU thread pool (see probnn.processes._optimize).
    kernel, noise, values, best_values = jax.lax.map(run, (kernels, noises))
    best_values = jnp.where(jnp.isfinite(best_values), best_values, jnp.inf)
    best = jnp.argmin(best_values)
    pick = lambda leaf: leaf[best]
    return jax.tree.map(pick, kernel), noise[best], values, best, best_values[best]


@eqx.filter_jit
def _predict_program(gp: GaussianPosterior, X_new, latent: bool):
    # Compiled once per shape, so eager predictions do not compile every network operation.
    # Under an outer jit (the acquisition function) this inlines.
    predictive = gp.predict(X_new, latent=latent)
    return predictive.loc, predictive.scale


class DeepKernelPosterior(eqx.Module):
    """Posterior of a :class:`DeepKernelGP`: exact GP regression with the trained deep kernel.

    ``model`` is the trained model (the warm start of the next fit). ``gp`` is the
    :class:`~probnn.processes.GaussianPosterior` that does the algebra, with the
    jitter-retry Cholesky factorisation of :mod:`probnn.kernels.linalg`.
    """

    model: DeepKernelGP
    gp: GaussianPosterior

    def predict(self, X_new, latent: bool = False) -> dist.Normal:
        """Normal predictive at ``X_new`` on the original target scale, batch shape ``(m,)``.

        ``latent=True`` gives the distribution of the noise-free function value.
        """
        X_new = self.gp._check_test_inputs(X_new)
        mean, scale = _predict_program(self.gp, X_new, latent)
        return dist.Normal(mean, scale)

    def sample_functions(self, key, X_new, num_samples: int) -> Array:
        """Draw joint samples of the latent function at ``X_new``, shape ``(num_samples, m)``."""
        return self.gp.sample_functions(key, X_new, num_samples)

    def log_marginal_likelihood(self) -> Array:
        """Log marginal likelihood of the training targets on their original scale."""
        return self.gp.log_marginal_likelihood()

    def features(self, X) -> Array:
        """Learned features ``g(X)``, shape ``(n, k)``."""
        return self.model.kernel.features(jnp.asarray(check_inputs(X, "X"), float_dtype()))
