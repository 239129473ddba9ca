"""scikit-learn regressors backed by probnn models.

:class:`ProcessRegressor` wraps the Gaussian, Student-t and scale-mixture processes of
:mod:`probnn.processes` (any name that ``probnn models`` lists),
:class:`BNNRegressor` the NUTS-sampled network :class:`probnn.bnn.HMCNetwork`, and
:class:`PFNRegressor` a prior-fitted network. All have ``fit(X, y)`` and
``predict(X, return_std=False)``, so they work in pipelines, grid searches and
``cross_val_score``::

    from sklearn.model_selection import cross_val_score
    from probnn.integrations.sklearn import ProcessRegressor

    scores = cross_val_score(ProcessRegressor("tp-nngp"), X, y, cv=5)

Inputs are standardised with training statistics, as ``probnn fit`` does, and targets by
the models themselves. Every fit and prediction runs in float64 inside
``jax.enable_x64(True)``, whatever the global precision, because scikit-learn passes
float64 data and expects float64 results.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data


def _to_numpy(leaf):
    if isinstance(leaf, jax.Array) and not jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return np.asarray(leaf)
    return leaf


class _ProbnnRegressor(RegressorMixin, BaseEstimator):
    """Shared fit and predict: input scaling, float64, the predictive's mean and standard deviation."""

    def _build_model(self, num_features: int):
        raise NotImplementedError

    def _fit_model(self, model, X, y, key):
        return model.fit(X, y, key=key)

    def fit(self, X, y):
        """Fit the model to ``X`` of shape ``(n, d)`` and ``y`` of shape ``(n,)``; return ``self``."""
        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64, ensure_min_samples=2)
        if isinstance(self.random_state, bool) or not isinstance(self.random_state, (int, np.integer)):
            raise ValueError(f"random_state must be an integer seed, got {self.random_state!r}.")
        center = X.mean(axis=0)
        scale = X.std(axis=0)
        # A constant column keeps scale 1, so it stays constant rather than turning into NaN.
        scale = np.where(scale > 1e-12, scale, 1.0)
        with jax.enable_x64(True):
            model = self._build_model(X.shape[1])
            self.posterior_ = self._fit_model(model, (X - center) / scale, y, jax.random.key(int(self.random_state)))
        self.x_center_ = center
        self.x_scale_ = scale
        return self

    def __getstate__(self):
        # JAX rebuilds a pickled float64 array in the default precision, float32 unless x64
        # is on, so the posterior is pickled with NumPy arrays, which keep their dtype.
        state = super().__getstate__()
        if "posterior_" in state:
            state["posterior_"] = jax.tree.map(_to_numpy, state["posterior_"])
        return state

    def predict(self, X, return_std: bool = False, latent: bool = False):
        """Predictive mean at ``X``, and its standard deviation with ``return_std=True``.

        The standard deviation is that of a new observation (noise included), or of the
        noise-free function value with ``latent=True``. A Student-t predictive with at most
        2 degrees of freedom has no finite variance, and its standard deviation is ``inf``.
        """
        check_is_fitted(self, "posterior_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        with jax.enable_x64(True):
            predictive = self.posterior_.predict(jnp.asarray((X - self.x_center_) / self.x_scale_), latent=latent)
            mean = np.asarray(predictive.mean, dtype=np.float64)
            if not return_std:
                return mean
            std = np.sqrt(np.asarray(predictive.variance, dtype=np.float64))
        return mean, std


class ProcessRegressor(_ProbnnRegressor):
    """Regressor on a named probnn process: a GP, the Student-t process or a scale mixture.

    Parameters
    ----------
    model : str
        A name of :data:`probnn.processes.registry.REGRESSION_MODELS`, e.g. ``"tp-nngp"``
        (default), ``"gp-nngp"``, ``"smnngp-burr"`` or ``"gp-matern"``.
    num_restarts : int
        Starts of the hyperparameter optimisation, the first at the default values.
    random_state : int
        Seed of the random restarts, the fitting subset and the inducing inputs.
    approximation : {"auto", "exact", "sparse"}
        Condition exactly or through inducing points; ``"auto"`` is exact up to 20,000
        training points. See :func:`probnn.processes.large.fit_large`.
    num_inducing : int
        Inducing points of the sparse approximation.
    max_fit_points : int or None
        Fit the hyperparameters on a random subset of at most this many points, then
        condition on all; ``None`` uses 3,000 (exact) or 10,000 (sparse).

    Attributes
    ----------
    posterior_ : probnn posterior
        The fitted posterior on standardised inputs: an exact posterior, or a
        :class:`probnn.processes.sparse.SparsePosterior`.
    x_center_, x_scale_ : ndarray of shape (n_features_in_,)
        Training mean and standard deviation of each input column.
    """

    def __init__(
        self,
        model: str = "tp-nngp",
        num_restarts: int = 3,
        random_state: int = 0,
        approximation: str = "auto",
        num_inducing: int = 512,
        max_fit_points: int | None = None,
    ):
        self.model = model
        self.num_restarts = num_restarts
        self.random_state = random_state
        self.approximation = approximation
        self.num_inducing = num_inducing
        self.max_fit_points = max_fit_points

    def _build_model(self, num_features: int):
        from probnn.processes.registry import make_regression_model

        return make_regression_model(self.model, num_features, num_restarts=self.num_restarts)

    def _fit_model(self, model, X, y, key):
        from probnn.processes.large import fit_large

        return fit_large(
            model, X, y, key=key, approximation=self.approximation, num_inducing=self.num_inducing,
            max_fit_points=self.max_fit_points, seed=int(self.random_state),
        )


class BNNRegressor(_ProbnnRegressor):
    """Regressor on a Bayesian MLP whose weights and noise are sampled by NUTS.

    The model is :class:`probnn.bnn.HMCNetwork` with the prior of
    :class:`probnn.bnn.NetworkPrior` (weights ``N(0, weight_scale^2 / fan_in)``, inferred
    log-normal noise). The predictive is the equal-weight Gaussian mixture over the draws.

    Parameters
    ----------
    widths : tuple of int
        Hidden-layer widths.
    activation : str
    weight_scale, bias_scale : float
        Prior scales of the weights and biases.
    num_chains, num_warmup, num_samples : int
        Chains and their warm-up and kept draws.
    max_tree_depth : int
        NUTS tree depth cap: at most ``2**max_tree_depth - 1`` leapfrog steps per draw.
    random_state : int
        Seed of the initial positions and of the chains.

    Attributes
    ----------
    posterior_ : probnn.bnn.SampledNetworkPosterior
    x_center_, x_scale_ : ndarray of shape (n_features_in_,)
    """

    def __init__(
        self,
        widths: tuple = (50, 50),
        activation: str = "tanh",
        weight_scale: float = 2.0,
        bias_scale: float = 0.5,
        num_chains: int = 4,
        num_warmup: int = 300,
        num_samples: int = 200,
        max_tree_depth: int = 6,
        random_state: int = 0,
    ):
        self.widths = widths
        self.activation = activation
        self.weight_scale = weight_scale
        self.bias_scale = bias_scale
        self.num_chains = num_chains
        self.num_warmup = num_warmup
        self.num_samples = num_samples
        self.max_tree_depth = max_tree_depth
        self.random_state = random_state

    def _build_model(self, num_features: int):
        from probnn.bnn import HMCNetwork, NetworkPrior
        from probnn.samplers import SamplerSettings

        prior = NetworkPrior(
            widths=tuple(self.widths),
            activation=self.activation,
            weight_scale=self.weight_scale,
            bias_scale=self.bias_scale,
        )
        settings = SamplerSettings(
            num_warmup=self.num_warmup, num_samples=self.num_samples, max_num_doublings=self.max_tree_depth
        )
        return HMCNetwork(prior, settings, num_chains=self.num_chains)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # A few hundred draws of a 2 x 50 network fit scikit-learn's 200-row check data
        # less well than its score threshold expects of a deterministic regressor.
        tags.regressor_tags.poor_score = True
        return tags


class PFNRegressor(_ProbnnRegressor):
    """Regressor on a prior-fitted network: fitting stores the data, prediction is one forward pass.

    Inputs are mapped to the unit cube with the training minimum and maximum of each
    column (the domain of the PFN's task prior), and targets are standardised. The
    predictive is the PFN's :class:`probnn.pfn.BarDistribution`.

    Parameters
    ----------
    checkpoint : str or PriorFittedNetwork
        A shipped checkpoint name (``"gp-hyper"``, the default, for up to 6 features and 60
        points) or a checkpoint folder.
    subsample : bool
        With more training rows than the PFN's ``max_train_points``, condition on a random
        subset of that size instead of raising ``ValueError``.
    reduce_features : bool
        With more input columns than the PFN's ``max_features``, project the standardised
        inputs onto their leading principal components instead of raising ``ValueError``.
    random_state : int
        Seed of the subset.

    Attributes
    ----------
    posterior_ : probnn.pfn.PFNPosterior
    x_center_, x_scale_ : ndarray
        Training minimum and range of each model input column.
    projection_ : tuple or None
        ``(mean, scale, directions)`` of the principal-component projection when
        ``reduce_features`` applied, else ``None``.
    """

    def __init__(
        self, checkpoint="gp-hyper", subsample: bool = False, reduce_features: bool = False, random_state: int = 0
    ):
        self.checkpoint = checkpoint
        self.subsample = subsample
        self.reduce_features = reduce_features
        self.random_state = random_state

    def fit(self, X, y):
        """Condition the PFN on ``X`` of shape ``(n, d)`` and ``y`` of shape ``(n,)``; return ``self``."""
        from probnn.pfn import PFNModel

        X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64, ensure_min_samples=1)
        if isinstance(self.random_state, bool) or not isinstance(self.random_state, (int, np.integer)):
            raise ValueError(f"random_state must be an integer seed, got {self.random_state!r}.")
        model = PFNModel(self.checkpoint)
        limit = model.max_train_points
        if X.shape[0] > limit:
            if not self.subsample:
                raise ValueError(
                    f"{X.shape[0]} training rows exceed the PFN's max_train_points = {limit}; pass "
                    "subsample=True to condition on a random subset, or use a PFN trained for more points."
                )
            rows = np.random.default_rng(int(self.random_state)).choice(X.shape[0], limit, replace=False)
            X, y = X[rows], y[rows]
        self.projection_ = None
        if X.shape[1] > model.pfn.config.max_features:
            if not self.reduce_features:
                raise ValueError(
                    f"{X.shape[1]} input columns exceed the PFN's max_features = {model.pfn.config.max_features}; "
                    "pass reduce_features=True to use the leading principal components, or select columns first."
                )
            self.projection_ = _principal_directions(X, model.pfn.config.max_features)
        X = self._project(X)
        low = X.min(axis=0)
        span = X.max(axis=0) - low
        # A constant column maps to the middle of the cube.
        span = np.where(span > 1e-12, span, 1.0)
        low = np.where(X.max(axis=0) - X.min(axis=0) > 1e-12, low, low - 0.5)
        self.posterior_ = model.fit(np.clip((X - low) / span, 0.0, 1.0), y)
        self.x_center_ = low
        self.x_scale_ = span
        return self

    def predict(self, X, return_std: bool = False, latent: bool = False):
        """Predictive mean at ``X``, and its standard deviation with ``return_std=True``.

        A PFN predicts noisy targets; ``latent`` is accepted for the common interface and
        changes nothing.
        """
        check_is_fitted(self, "posterior_")
        X = self._project(validate_data(self, X, reset=False, dtype=np.float64))
        # The float32 weights run in float64 here: in float32, XLA's matrix products round
        # differently for different numbers of rows, so a point's prediction would depend
        # (at the 1e-7 level) on which other points are predicted with it.
        with jax.enable_x64(True):
            posterior = jax.tree.map(
                lambda leaf: jnp.asarray(leaf, jnp.float64) if eqx.is_inexact_array(leaf) else leaf, self.posterior_
            )
            predictive = posterior.predict(jnp.asarray((X - self.x_center_) / self.x_scale_))
            mean = np.asarray(predictive.mean, dtype=np.float64)
            std = np.sqrt(np.asarray(predictive.variance, dtype=np.float64))
        return (mean, std) if return_std else mean

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # With subsample=True the PFN conditions on 60 of the 200 rows of scikit-learn's
        # training check, which then scores below the R^2 of 0.5 it expects.
        tags.regressor_tags.poor_score = True
        return tags

    def _project(self, X):
        if getattr(self, "projection_", None) is None:
            return X
        mean, scale, directions = self.projection_
        return ((X - mean) / scale) @ directions


def _principal_directions(X, count: int):
    """Column means, scales and the ``count`` leading right singular vectors of standardised ``X``."""
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    _, _, vt = np.linalg.svd((X - mean) / scale, full_matrices=False)
    directions = np.zeros((X.shape[1], count))
    directions[:, : min(count, vt.shape[0])] = vt[:count].T
    return mean, scale, directions
