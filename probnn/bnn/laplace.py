r"""Laplace approximations around a MAP-trained network, with the linearised predictive.

A network :math:`f(x; \theta)` is trained to the mode :math:`\theta_*` of

.. math::

    \log p(\theta \mid y) = -\frac{1}{2\sigma_0^2} \sum_i \big(y_i - f(x_i; \theta)\big)^2
        - \frac{p_0}{2} \lVert \theta \rVert^2 + \text{const},

and the posterior over a parameter subset (all parameters, or the readout layer) is
replaced by the Gaussian :math:`\mathcal N(\theta_*, \Sigma)` with the generalized
Gauss-Newton (GGN) precision

.. math::

    \Sigma^{-1} = \frac{1}{\sigma^2} \sum_i J(x_i)^\top J(x_i) + p\, I,
    \qquad J(x) = \partial f(x; \theta) / \partial \theta \big|_{\theta_*}.

The noise variance :math:`\sigma^2` and prior precision :math:`p` maximise the Laplace
approximation of the marginal likelihood,

.. math::

    \log Z(\sigma^2, p) = -\frac{\mathrm{RSS}}{2\sigma^2} - \frac n2 \log(2\pi\sigma^2)
        - \frac p2 \lVert \theta_* \rVert^2
        - \frac12 \sum_j \log\Big(1 + \frac{\lambda_j}{p\,\sigma^2}\Big),

where :math:`\lambda_j` are the eigenvalues of the GGN :math:`\sum_i J_i^\top J_i` (or of
its Kronecker factorisation) and RSS is the residual sum of squares at :math:`\theta_*`.
This is :math:`\log p(y \mid \theta_*) + \log p(\theta_*) + \frac P2 \log 2\pi -
\frac12 \log\det\Sigma^{-1}` with the :math:`P \log p` terms cancelled. It is maximised over
:math:`(\log\sigma^2, \log p)` by a 41 x 41 grid followed by 30 L-BFGS steps (optax) from the
best grid point, clipped to the grid's box. The MAP is trained once, at fixed
:math:`(\sigma_0^2, p_0)`, and the hyperparameters are tuned afterwards, as in the post-hoc
mode of Daxberger et al., "Laplace Redux -- Effortless Bayesian Deep Learning", NeurIPS 2021.

The predictive is that of the network linearised at :math:`\theta_*` (the GLM predictive):

.. math::

    f(x_*) \sim \mathcal N\big(f(x_*; \theta_*),\; J(x_*)\, \Sigma\, J(x_*)^\top\big),

plus :math:`\sigma^2` for a new observation. Three curvature forms are implemented:

- ``subset="full", hessian="ggn"``: the exact GGN over all :math:`P` parameters, used through
  the Woodbury identity. With :math:`K = J J^\top / p` (the empirical neural tangent kernel of
  the training inputs, scaled by the prior variance) the linearised model is a Gaussian
  process, and :math:`J_* \Sigma J_*^\top = k_{**} - k_*^\top (K + \sigma^2 I)^{-1} k_*`. Every
  matrix is ``n x n`` or ``n x P``, never ``P x P``.
- ``subset="last-layer"``: the readout weights and bias only, with the hidden layers fixed at
  the MAP. This is Bayesian linear regression on the features :math:`[\phi(x), 1]`, and is
  exact (the GGN of a linear readout is its Hessian).
- ``hessian="kron"``: the Kronecker-factored GGN per layer (KFAC, as in the Laplace
  approximation of Ritter, Botev and Barber, ICLR 2018), :math:`G_l \approx A_l \otimes B_l` with
  :math:`A_l = \sum_i a_i a_i^\top` over layer inputs (bias included) and
  :math:`B_l = \frac1n \sum_i g_i g_i^\top` over gradients of the output with respect to the
  layer's pre-activations. Each layer's precision :math:`A_l \otimes B_l / \sigma^2 + p I` is
  diagonal in the eigenbases of :math:`A_l` and :math:`B_l`. For the readout of a scalar
  network :math:`B = 1`, so ``last-layer`` with ``kron`` equals ``last-layer`` with ``ggn``.

NOTE: the Kronecker factors have rank up to ``(in_l + 1) * out_l``, far above the rank ``n``
of the exact GGN on a few dozen points. Their many positive eigenvalues make the evidence
favour a large noise variance: on 30 points of a smooth 6-d function the chosen
:math:`\sigma^2` was about 4 (standardised scale) where the exact GGN chose 0.008. Pass
``noise=`` with ``hessian="kron"`` on small data sets.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from probnn.bnn._common import (
    NetworkData,
    check_fit_arguments,
    check_positive_integer,
    prepare_training_data,
)
from probnn.processes._data import check_test_inputs
from probnn.nets.mlp import ACTIVATIONS, MLP, check_activation, check_widths
from probnn.nets.train import TrainConfig, fit_network, squared_error
from probnn.processes._data import float_dtype

#: Parameter subsets the Laplace approximation can cover.
SUBSETS = ("last-layer", "full")

#: Curvature approximations.
HESSIANS = ("ggn", "kron")

#: Training settings of the MAP network unless ``config`` is given. Weight decay is 0
#: because the Gaussian prior enters the loss itself.
DEFAULT_CONFIG = TrainConfig(learning_rate=1e-2, weight_decay=0.0, num_steps=2000)

#: Box of the hyperparameter search, on the standardised target scale: the noise variance
#: from ``noise_lower_bound`` to 10 times the target variance, the prior precision over
#: eight decades.
NOISE_UPPER_BOUND = 10.0
PRIOR_PRECISION_BOUNDS = (1e-4, 1e4)
GRID_SIZE = 41
REFINE_STEPS = 30


class EvidenceStatistics(eqx.Module):
    """Everything the Laplace marginal likelihood needs, on the standardised scale.

    ``residual_sum_of_squares`` is RSS at the MAP, ``num_data`` the number of real rows,
    ``parameter_norm`` the squared norm of the MAP parameters of the subset and
    ``eigenvalues`` those of the GGN (zeros, from padding, contribute nothing).
    """

    residual_sum_of_squares: Float[Array, ""]
    num_data: Float[Array, ""]
    parameter_norm: Float[Array, ""]
    eigenvalues: Float[Array, " k"]


def log_evidence(stats: EvidenceStatistics, noise, prior_precision):
    """Compute the Laplace log marginal likelihood ``log Z(noise, prior_precision)`` of the module docstring."""
    return (
        -0.5 * stats.residual_sum_of_squares / noise
        - 0.5 * stats.num_data * jnp.log(2.0 * jnp.pi * noise)
        - 0.5 * prior_precision * stats.parameter_norm
        - 0.5 * jnp.sum(jnp.log1p(stats.eigenvalues / (prior_precision * noise)))
    )


def _maximize_evidence(stats: EvidenceStatistics, fixed_noise, fixed_prior, noise_lower_bound):
    """Return ``(noise, prior_precision)`` maximising :func:`log_evidence`: grid, then L-BFGS."""
    dtype = stats.eigenvalues.dtype
    lower = jnp.log(jnp.array([noise_lower_bound, PRIOR_PRECISION_BOUNDS[0]], dtype))
    upper = jnp.log(jnp.array([NOISE_UPPER_BOUND, PRIOR_PRECISION_BOUNDS[1]], dtype))

    def substitute(u):
        # Fixed values replace the searched coordinate, whose gradient is then zero.
        log_noise = u[0] if fixed_noise is None else jnp.log(jnp.asarray(fixed_noise, dtype))
        log_prior = u[1] if fixed_prior is None else jnp.log(jnp.asarray(fixed_prior, dtype))
        return log_noise, log_prior

    def loss(u):
        log_noise, log_prior = substitute(u)
        value = -log_evidence(stats, jnp.exp(log_noise), jnp.exp(log_prior))
        return jnp.where(jnp.isfinite(value), value, jnp.inf)

    axes = jnp.linspace(lower, upper, GRID_SIZE)
    grid = jnp.stack(jnp.meshgrid(axes[:, 0], axes[:, 1], indexing="ij"), axis=-1).reshape(-1, 2)
    grid_values = jax.vmap(loss)(grid)
    start = grid[jnp.argmin(grid_values)]

    optimizer = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        u, state = carry
        value, grad = value_and_grad(u, state=state)
        updates, state = optimizer.update(grad, state, u, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(u, updates), state), None

    (refined, _), _ = jax.lax.scan(step, (start, optimizer.init(start)), None, length=REFINE_STEPS)
    refined = jnp.clip(refined, lower, upper)
    better = jnp.isfinite(loss(refined)) & (loss(refined) <= loss(start))
    log_noise, log_prior = substitute(jnp.where(better, refined, start))
    return jnp.exp(log_noise), jnp.exp(log_prior)


# -- network derivatives -------------------------------------------------------------


def _trainable(network: MLP):
    return eqx.partition(network, eqx.is_inexact_array)


def parameter_jacobian(network: MLP, X) -> Float[Array, "n P"]:
    """Jacobian of the outputs at the rows of ``X`` with respect to all parameters.

    Columns follow ``jax.flatten_util.ravel_pytree`` of the network's parameters.
    """
    params, static = _trainable(network)

    def row(x):
        gradient = jax.grad(lambda p: eqx.combine(p, static)(x[None])[0])(params)
        return ravel_pytree(gradient)[0]

    return jax.vmap(row)(X)


def layer_inputs_and_gradients(network: MLP, X):
    """Per-row inputs ``a_l`` (with a trailing 1 for the bias) and pre-activation gradients ``g_l``.

    Returns two lists over layers, of arrays ``(n, in_l + 1)`` and ``(n, out_l)``. The
    Jacobian of the output with respect to layer ``l``'s augmented weights ``[W_l; b_l]``
    at row ``i`` is the outer product ``a_{il} g_{il}^T``.
    """
    phi = ACTIVATIONS[network.activation]
    num_layers = len(network.weights)
    dtype = network.weights[0].dtype

    def row(x):
        # The MLP's forward pass with a zero shift added to each pre-activation, so that the
        # gradient with respect to the shifts is the gradient with respect to the pre-activations.
        def forward(shifts):
            h = x.astype(dtype)
            inputs = []
            for layer, (W, b) in enumerate(zip(network.weights, network.biases)):
                inputs.append(jnp.append(h, jnp.ones((1,), dtype)))
                z = h @ W + b + shifts[layer]
                h = z if layer == num_layers - 1 else phi(z)
            return h[0], inputs

        shifts = [jnp.zeros_like(b) for b in network.biases]
        gradients, inputs = jax.grad(forward, has_aux=True)(shifts)
        return inputs, gradients

    return jax.vmap(row)(X)


def _readout_features(network: MLP, X):
    features = network.features(X)
    return jnp.concatenate([features, jnp.ones((features.shape[0], 1), features.dtype)], axis=1)


# -- curvature forms -----------------------------------------------------------------


class _LastLayerCurvature(eqx.Module):
    """Readout posterior covariance ``Sigma = S S^T`` over the features ``[phi(x), 1]``."""

    factor: Float[Array, "k k"]

    def latent_variance(self, network, X):
        features = _readout_features(network, X).astype(self.factor.dtype)
        return jnp.sum((features @ self.factor) ** 2, axis=1)

    def perturbations(self, key, network, X, num_samples):
        features = _readout_features(network, X).astype(self.factor.dtype)
        z = jax.random.normal(key, (num_samples, self.factor.shape[1]), self.factor.dtype)
        return z @ (features @ self.factor).T


class _FullCurvature(eqx.Module):
    """Full-GGN posterior in function space (Woodbury), from ``J J^T = U diag(lambda) U^T``.

    ``projected`` is ``U^T J``, ``(N, P)``; ``mask`` marks real training rows.
    """

    projected: Float[Array, "N P"]
    eigenvectors: Float[Array, "N N"]
    eigenvalues: Float[Array, " N"]
    mask: Float[Array, " N"]
    noise: Float[Array, ""]
    prior_precision: Float[Array, ""]

    def latent_variance(self, network, X):
        J = parameter_jacobian(network, X).astype(self.projected.dtype)
        p = self.prior_precision
        # k_* ^T (K + noise I)^{-1} k_* = sum_j (u_j^T J J_*^T)^2 / (p (lambda_j + p noise)).
        scaled = self.projected / jnp.sqrt(p * (self.eigenvalues + p * self.noise))[:, None]
        explained = jnp.sum((scaled @ J.T) ** 2, axis=0)
        return jnp.maximum(jnp.sum(J**2, axis=1) / p - explained, 0.0)

    def perturbations(self, key, network, X, num_samples):
        # Matheron's rule: with theta_0 ~ N(0, I / p) and eps ~ N(0, noise I) on the real rows,
        # theta_0 - J^T (J J^T + p noise I)^{-1} (J theta_0 + eps) ~ N(0, Sigma).
        dtype = self.projected.dtype
        p = self.prior_precision
        prior_key, noise_key = jax.random.split(key)
        num_rows, num_params = self.projected.shape
        theta = jax.random.normal(prior_key, (num_samples, num_params), dtype) / jnp.sqrt(p)
        eps = jax.random.normal(noise_key, (num_samples, num_rows), dtype) * jnp.sqrt(self.noise) * self.mask
        rotated = theta @ self.projected.T + eps @ self.eigenvectors
        deltas = theta - (rotated / (self.eigenvalues + p * self.noise)) @ self.projected
        return _linearized_outputs(network, X, deltas)


class _KroneckerCurvature(eqx.Module):
    """Per-layer KFAC posterior: eigenbases of ``A_l`` and ``B_l`` and the precision's inverse eigenvalues."""

    layers: tuple[int, ...] = eqx.field(static=True)
    input_bases: tuple[Array, ...]
    gradient_bases: tuple[Array, ...]
    variances: tuple[Array, ...]

    def latent_variance(self, network, X):
        inputs, gradients = layer_inputs_and_gradients(network, X)
        total = 0.0
        for layer, QA, QG, D in zip(self.layers, self.input_bases, self.gradient_bases, self.variances):
            a = inputs[layer].astype(D.dtype) @ QA
            g = gradients[layer].astype(D.dtype) @ QG
            total = total + jnp.einsum("mi,ij,mj->m", a**2, D, g**2)
        return total

    def perturbations(self, key, network, X, num_samples):
        inputs, gradients = layer_inputs_and_gradients(network, X)
        keys = jax.random.split(key, len(self.layers))
        total = 0.0
        for layer, QA, QG, D, k in zip(self.layers, self.input_bases, self.gradient_bases, self.variances, keys):
            z = jax.random.normal(k, (num_samples,) + D.shape, D.dtype)
            delta = QA @ (z * jnp.sqrt(D)) @ QG.T
            a = inputs[layer].astype(D.dtype)
            g = gradients[layer].astype(D.dtype)
            total = total + jnp.einsum("mi,sij,mj->sm", a, delta, g)
        return total


def _linearized_outputs(network: MLP, X, deltas):
    """``J(X) delta`` for each row of ``deltas`` (flat parameter vectors), by forward-mode AD."""
    params, static = _trainable(network)
    flat, unravel = ravel_pytree(params)

    def one(delta):
        tangent = unravel(delta.astype(flat.dtype))
        _, output = jax.jvp(lambda p: eqx.combine(p, static)(X), (params,), (tangent,))
        return output

    return jax.vmap(one)(deltas).astype(deltas.dtype)


# -- the model -----------------------------------------------------------------------


class LaplaceNetwork(eqx.Module):
    r"""MAP-trained MLP with a Laplace posterior and the linearised (GLM) predictive.

    See the module docstring for the equations. The MAP training loss is
    ``mean squared error + sigma_0^2 p_0 ||theta||^2 / n`` (the negative log posterior times
    ``2 sigma_0^2 / n``), minimised by :func:`~probnn.nets.fit_network` on standardised
    targets.

    Parameters
    ----------
    widths : sequence of int
        Hidden-layer widths; ``()`` gives Bayesian linear regression on the inputs.
    activation : str
        Hidden activation, a key of :data:`probnn.nets.ACTIVATIONS`.
    subset : {"last-layer", "full"}
        Parameters the Laplace approximation covers; the others stay at the MAP.
    hessian : {"ggn", "kron"}
        Exact GGN or its Kronecker factorisation per layer.
    config : TrainConfig, optional
        MAP training settings; :data:`DEFAULT_CONFIG` by default. ``weight_decay`` must be
        0 (the prior is in the loss) and ``validation_fraction`` 0 (the MAP is the mode of
        the posterior, not an early-stopped fit).
    noise : float or None
        Fixed noise variance on the standardised target scale, used both for the MAP and
        the Laplace approximation; ``None`` chooses it by the Laplace marginal likelihood.
    prior_precision : float or None
        Fixed prior precision ``p``, likewise; ``None`` chooses it by the marginal likelihood.
    map_noise, map_prior_precision : float
        ``sigma_0^2`` and ``p_0`` of the MAP training loss where ``noise`` or
        ``prior_precision`` is ``None``.
    warm_start_steps : int, optional
        Training steps of a warm-started fit (``num_restarts=1``), which continues from the
        previous MAP; ``config.num_steps // 4`` by default.
    noise_lower_bound : float
        Lower bound on the chosen noise variance (standardised scale).

    Examples
    --------
    >>> import jax, numpy as np
    >>> X = np.linspace(0, 1, 20)[:, None]; y = np.sin(6 * X[:, 0])
    >>> posterior = LaplaceNetwork(widths=(20,)).fit(X, y, key=jax.random.key(0))
    >>> posterior.predict(X[:4]).mean.shape
    (4,)
    """

    network: MLP | None
    widths: tuple[int, ...] = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    subset: str = eqx.field(static=True)
    hessian: str = eqx.field(static=True)
    config: TrainConfig = eqx.field(static=True)
    noise: float | None = eqx.field(static=True)
    prior_precision: float | None = eqx.field(static=True)
    map_noise: float = eqx.field(static=True)
    map_prior_precision: float = eqx.field(static=True)
    warm_start_steps: int = eqx.field(static=True)
    noise_lower_bound: float = eqx.field(static=True)

    def __init__(
        self,
        widths=(50, 50),
        activation: str = "tanh",
        subset: str = "full",
        hessian: str = "ggn",
        *,
        config: TrainConfig | None = None,
        noise: float | None = None,
        prior_precision: float | None = None,
        map_noise: float = 1e-2,
        map_prior_precision: float = 1.0,
        warm_start_steps: int | None = None,
        noise_lower_bound: float = 1e-6,
    ):
        self.widths = check_widths(widths, allow_empty=True)
        self.activation = check_activation(activation)
        if subset not in SUBSETS:
            raise ValueError(f"subset must be one of {', '.join(SUBSETS)}; got {subset!r}.")
        if hessian not in HESSIANS:
            raise ValueError(f"hessian must be one of {', '.join(HESSIANS)}; got {hessian!r}.")
        self.subset = subset
        self.hessian = hessian
        config = DEFAULT_CONFIG if config is None else config
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config must be a probnn.nets.TrainConfig, got {type(config).__name__}.")
        if config.weight_decay != 0.0:
            raise ValueError(
                f"LaplaceNetwork puts the Gaussian prior in the training loss; got config.weight_decay="
                f"{config.weight_decay!r}, which would add a second, decoupled prior. Set it to 0 and "
                "choose the prior with prior_precision or map_prior_precision."
            )
        if config.validation_fraction != 0.0:
            raise ValueError(
                f"LaplaceNetwork needs the posterior mode, not an early-stopped fit; got "
                f"validation_fraction={config.validation_fraction!r}. Set it to 0."
            )
        self.config = config
        for name, value in (("noise", noise), ("prior_precision", prior_precision)):
            if value is not None and not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite positive number or None (chosen from the data), got {value!r}.")
        for name, value in (
            ("map_noise", map_noise),
            ("map_prior_precision", map_prior_precision),
            ("noise_lower_bound", noise_lower_bound),
        ):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value!r}.")
        if not noise_lower_bound < NOISE_UPPER_BOUND:
            raise ValueError(f"noise_lower_bound must be below {NOISE_UPPER_BOUND}, got {noise_lower_bound!r}.")
        self.noise = None if noise is None else float(noise)
        self.prior_precision = None if prior_precision is None else float(prior_precision)
        self.map_noise = float(map_noise)
        self.map_prior_precision = float(map_prior_precision)
        if warm_start_steps is None:
            warm_start_steps = max(1, config.num_steps // 4)
        self.warm_start_steps = check_positive_integer(warm_start_steps, "warm_start_steps")
        self.noise_lower_bound = float(noise_lower_bound)
        self.network = None

    def fit(self, X, y, *, key, num_restarts: int | None = None) -> "LaplacePosterior":
        """Train the MAP network, choose the noise and prior precision, and return the posterior.

        Parameters
        ----------
        X : array of shape (n, d) or (n,)
        y : array of shape (n,) or (n, 1)
        key : jax.random key
            Draws the initialisation and minibatches.
        num_restarts : int, optional
            ``1`` continues from the previous fit's MAP for ``warm_start_steps`` steps. Without
            a previous fit, or when the input dimension changed, it trains a fresh network,
            as ``None`` and any other value do.

        Returns
        -------
        LaplacePosterior
        """
        warm = check_fit_arguments(key, num_restarts)
        data, standardizer = prepare_training_data(X, y)
        dim = data.X.shape[1]
        init_key, train_key = jax.random.split(key)
        network = self.network
        if warm and network is not None and network.in_features == dim:
            config = dataclasses.replace(self.config, num_steps=self.warm_start_steps)
        else:
            network = MLP(dim, self.widths, key=init_key, activation=self.activation)
            config = self.config
        map_noise = self.map_noise if self.noise is None else self.noise
        map_prior = self.map_prior_precision if self.prior_precision is None else self.prior_precision
        network, curvature, stats, noise, prior_precision = _fit_program(
            network, data, train_key, config, map_noise * map_prior, self.subset, self.hessian,
            self.noise, self.prior_precision, self.noise_lower_bound,
        )
        dtype = float_dtype()
        return LaplacePosterior(
            model=eqx.tree_at(lambda m: m.network, self, network, is_leaf=lambda node: node is None),
            curvature=curvature,
            evidence=stats,
            noise=noise,
            prior_precision=prior_precision,
            y_mean=jnp.asarray(standardizer.mean, dtype),
            y_scale=jnp.asarray(standardizer.scale, dtype),
        )


def _train_map(network, data: NetworkData, key, config, penalty):
    """Minimise ``weighted MSE + penalty * ||theta||^2 / n`` with :func:`fit_network`."""
    dtype = network.weights[0].dtype

    def loss(model, X, y, weights):
        params = eqx.filter(model, eqx.is_inexact_array)
        norm = sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(params))
        return squared_error(model, X, y, weights) + penalty * norm / data.n.astype(dtype)

    real = data.weights.astype(dtype)
    network, _ = fit_network(
        network, data.X.astype(dtype), data.y.astype(dtype), real, jnp.zeros_like(real), key, config, loss
    )
    return network


def _subset_parameter_norm(network: MLP, subset: str):
    if subset == "last-layer":
        leaves = [network.weights[-1], network.biases[-1]]
    else:
        leaves = jax.tree.leaves(eqx.filter(network, eqx.is_inexact_array))
    return sum(jnp.sum(leaf.astype(float_dtype()) ** 2) for leaf in leaves)


def _kronecker_factors(network: MLP, data: NetworkData, layers):
    """Eigendecompositions of ``A_l = sum_i w_i a_i a_i^T`` and ``B_l = sum_i w_i g_i g_i^T / n``."""
    dtype = data.y.dtype
    inputs, gradients = layer_inputs_and_gradients(network, data.X)
    factors = []
    for layer in layers:
        a = inputs[layer].astype(dtype)
        g = gradients[layer].astype(dtype)
        A = (a * data.weights[:, None]).T @ a
        B = (g * data.weights[:, None]).T @ g / data.n
        factors.append((jnp.linalg.eigh(A), jnp.linalg.eigh(B)))
    return factors


@eqx.filter_jit
def _fit_program(network, data: NetworkData, key, config, penalty, subset, hessian, fixed_noise, fixed_prior, noise_lower_bound):
    network = _train_map(network, data, key, config, penalty)
    dtype = data.y.dtype
    residual = (data.y - network(data.X).astype(dtype)) * data.weights
    rss = jnp.sum(residual**2)
    norm = _subset_parameter_norm(network, subset)

    if hessian == "kron":
        layers = (len(network.weights) - 1,) if subset == "last-layer" else tuple(range(len(network.weights)))
        factors = _kronecker_factors(network, data, layers)
        eigenvalues = jnp.concatenate(
            [jnp.clip(jnp.outer(eA, eB), 0.0).ravel() for (eA, _), (eB, _) in factors]
        )
    elif subset == "last-layer":
        features = _readout_features(network, data.X).astype(dtype) * data.weights[:, None]
        readout_eigenvalues, readout_vectors = jnp.linalg.eigh(features.T @ features)
        eigenvalues = jnp.clip(readout_eigenvalues, 0.0)
    else:
        J = parameter_jacobian(network, data.X).astype(dtype) * data.weights[:, None]
        gram_eigenvalues, gram_vectors = jnp.linalg.eigh(J @ J.T)
        eigenvalues = jnp.clip(gram_eigenvalues, 0.0)

    stats = EvidenceStatistics(rss, data.n, norm, eigenvalues)
    noise, prior = _maximize_evidence(stats, fixed_noise, fixed_prior, noise_lower_bound)

    if hessian == "kron":
        curvature = _KroneckerCurvature(
            layers=layers,
            input_bases=tuple(QA for (_, QA), _ in factors),
            gradient_bases=tuple(QB for _, (_, QB) in factors),
            variances=tuple(
                1.0 / (jnp.outer(jnp.clip(eA, 0.0), jnp.clip(eB, 0.0)) / noise + prior)
                for (eA, _), (eB, _) in factors
            ),
        )
    elif subset == "last-layer":
        curvature = _LastLayerCurvature(readout_vectors / jnp.sqrt(eigenvalues / noise + prior))
    else:
        curvature = _FullCurvature(gram_vectors.T @ J, gram_vectors, eigenvalues, data.weights, noise, prior)
    return network, curvature, stats, noise, prior


class LaplacePosterior(eqx.Module):
    """Laplace posterior of a :class:`LaplaceNetwork`: the MAP, the curvature and the chosen hyperparameters.

    ``noise`` and ``prior_precision`` are on the standardised target scale. An immutable
    pytree, so it passes through ``jit`` as the acquisition's parameters.
    """

    model: LaplaceNetwork
    curvature: eqx.Module
    evidence: EvidenceStatistics
    noise: Float[Array, ""]
    prior_precision: Float[Array, ""]
    y_mean: Float[Array, ""]
    y_scale: Float[Array, ""]

    @property
    def network(self) -> MLP:
        """The MAP network, predicting standardised targets."""
        return self.model.network

    def _latent_moments(self, X_new):
        mean = self.network(X_new).astype(self.y_mean.dtype)
        return mean, self.curvature.latent_variance(self.network, X_new)

    def predict(self, X_new, latent: bool = False) -> dist.Normal:
        """Return the linearised predictive ``Normal(f_MAP(x), J Sigma J^T [+ noise])`` on the original scale.

        Parameters
        ----------
        X_new : array of shape (m, d) or (m,)
        latent : bool
            If true, the distribution of the function value; otherwise of a new observation.

        Returns
        -------
        numpyro.distributions.Normal
            Batch shape ``(m,)``.
        """
        X_new = check_test_inputs(X_new, self.network.in_features)
        mean, variance = self._latent_moments(X_new)
        if not latent:
            variance = variance + self.noise
        variance = jnp.maximum(variance, jnp.finfo(variance.dtype).tiny)
        return dist.Normal(mean * self.y_scale + self.y_mean, jnp.sqrt(variance) * self.y_scale)

    def sample_functions(self, key, X_new, num_samples: int) -> Float[Array, "s m"]:
        """Draw joint samples of the linearised network at ``X_new``, shape ``(num_samples, m)``.

        Each draw is ``f_MAP(X) + J(X) delta`` with one ``delta ~ N(0, Sigma)`` for all rows.
        """
        X_new = check_test_inputs(X_new, self.network.in_features)
        mean = self.network(X_new).astype(self.y_mean.dtype)
        draws = mean + self.curvature.perturbations(key, self.network, X_new, num_samples).astype(mean.dtype)
        return draws * self.y_scale + self.y_mean

    def log_marginal_likelihood(self, noise=None, prior_precision=None) -> Array:
        """Compute the Laplace log marginal likelihood of the training targets on their original scale.

        ``noise`` and ``prior_precision`` are on the standardised scale and default to the
        chosen values. The MAP and its curvature stay as fitted.
        """
        noise = self.noise if noise is None else jnp.asarray(noise, self.noise.dtype)
        prior = self.prior_precision if prior_precision is None else jnp.asarray(prior_precision, self.noise.dtype)
        value = log_evidence(self.evidence, noise, prior)
        return value - self.evidence.num_data * jnp.log(self.y_scale)
