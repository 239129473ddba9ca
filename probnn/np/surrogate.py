r"""A trained neural process as a model with probnn's fit/predict interface.

Fitting a neural process stores the context, padded to the number of points it was
trained for so that every fit has the same shapes and predictions compile once. For an
MPNP, fitting also draws the ``K`` pseudo context sets, so one posterior always returns
the same predictive. Predictives are numpyro distributions with batch shape ``(m,)``: a
``Normal`` for CNP and CANP, and for MPNP a ``MixtureSameFamily`` of ``K`` equally
weighted Normals, one per pseudo context set.

A network is trained on the inputs and outputs of one task family. :class:`NPModel` can map
the user's data there and back: ``x_bounds`` maps an input box affinely onto the training
range of the inputs, and ``standardize`` rescales the context outputs to mean 0 and
standard deviation :data:`OUTPUT_SCALE`. Predictions are mapped back to the user's scale,
:math:`y = m_y + s_y\,\tilde y / 0.5` for context mean :math:`m_y` and standard
deviation :math:`s_y`.
"""

from __future__ import annotations

import os
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, ArrayLike, Bool, Float

from probnn.np.models import MPNP
from probnn.np.network import NeuralProcessNetwork, load_np

__all__ = ["NPModel", "NPPosterior", "OUTPUT_SCALE"]

#: Standard deviation of the standardised outputs: the middle of the output scales
#: ``U[0.1, 1]`` of the GP task families the shipped networks are trained on.
OUTPUT_SCALE = 0.5


def as_inputs(x, name: str) -> np.ndarray:
    """Return 1-d inputs as a float array ``(n, 1)``; raise ``ValueError`` for other shapes or NaN."""
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != 1:
        raise ValueError(
            f"{name} must have shape (n, 1) or (n,) because neural processes here take 1-d inputs; "
            f"got shape {x.shape}."
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values; drop those rows first.")
    return x


def warn_outside_range(x: np.ndarray, x_range, name: str, x_bounds=None) -> None:
    """Warn when inputs leave the range the network was trained on, where its predictions are untested.

    With ``x_bounds`` the user's inputs are checked against those bounds, which map onto
    the training range ``x_range``.
    """
    low, high = x_range if x_bounds is None else x_bounds
    if x.size and (x.min() < low or x.max() > high):
        where = (
            f"the training range [{low}, {high}] of this neural process" if x_bounds is None
            else f"x_bounds [{low}, {high}], which maps onto the training range {list(x_range)} of this neural process"
        )
        fix = "Rescale the inputs into that range." if x_bounds is None else "Widen x_bounds to cover them."
        warnings.warn(
            f"{name} has values in [{x.min():.3g}, {x.max():.3g}], outside {where}; predictions there are "
            f"extrapolations. {fix}",
            stacklevel=3,
        )


class NPModel(eqx.Module):
    """A trained neural process used as a regression model on 1-d inputs.

    Parameters
    ----------
    network : NeuralProcessNetwork, str or path
        A loaded network, or a shipped checkpoint name or a folder for :func:`load_np`.
    x_bounds : (float, float), optional
        An input interval mapped affinely onto the network's training range (``[-2, 2]``
        for the shipped networks). By default inputs are passed as they are.
    standardize : bool
        Rescale the context outputs to mean 0 and standard deviation :data:`OUTPUT_SCALE`
        before conditioning, and map predictions back. Turn it off for data already on
        the scale of the task family.
    subsample : bool
        With more context points than the network takes, condition on a random subset of
        that size (drawn with the fit key) and warn, instead of raising ``ValueError``.

    Examples
    --------
    >>> model = NPModel("mpnp-rbf", x_bounds=(0.0, 10.0), standardize=True)  # doctest: +SKIP
    >>> posterior = model.fit(X, y, key=jax.random.key(0))  # doctest: +SKIP
    >>> posterior.predict(X_new).mean  # doctest: +SKIP
    """

    network: NeuralProcessNetwork
    x_bounds: tuple[float, float] | None = eqx.field(static=True, default=None)
    standardize: bool = eqx.field(static=True, default=False)
    subsample: bool = eqx.field(static=True, default=False)

    def __init__(
        self,
        network: NeuralProcessNetwork | str | os.PathLike,
        *,
        x_bounds: tuple[float, float] | None = None,
        standardize: bool = False,
        subsample: bool = False,
    ):
        self.network = network if isinstance(network, NeuralProcessNetwork) else load_np(network)
        if x_bounds is not None:
            try:
                low, high = (float(v) for v in x_bounds)
            except (TypeError, ValueError):
                raise ValueError(f"x_bounds must be a pair (low, high) of numbers, got {x_bounds!r}.") from None
            if not (np.isfinite(low) and np.isfinite(high) and low < high):
                raise ValueError(f"x_bounds must be finite with low < high, got {x_bounds!r}.")
            x_bounds = (low, high)
        self.x_bounds = x_bounds
        self.standardize = bool(standardize)
        self.subsample = bool(subsample)

    def _to_network_inputs(self, X: np.ndarray) -> np.ndarray:
        if self.x_bounds is None:
            return X
        low, high = self.x_bounds
        train_low, train_high = self.network.limits["x_range"]
        return train_low + (X - low) * (train_high - train_low) / (high - low)

    def fit(self, X: ArrayLike, y: ArrayLike, *, key=None, num_restarts=None) -> "NPPosterior":
        """Condition on the context ``(X, y)``; ``X`` may be empty.

        ``key`` draws the MPNP pseudo context sets and the subset of ``subsample``
        (default ``jax.random.key(0)``); ``num_restarts`` is accepted for the common
        model interface, because a neural process has no hyperparameters to fit.
        """
        del num_restarts
        X = as_inputs(X, "X")
        y = np.asarray(y, dtype=float)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must be 1-d with one target per row of X ({X.shape[0]}); got shape {y.shape}.")
        if not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or infinite values; drop those rows first.")
        key = jax.random.key(0) if key is None else key
        key_subset, key_pseudo = jax.random.split(key)
        limits = self.network.limits
        max_points = int(limits["max_points"])
        if X.shape[0] > max_points:
            if not self.subsample:
                raise ValueError(
                    f"{X.shape[0]} context points exceed this neural process's limit of {max_points} points per "
                    "task; pass a subset, or NPModel(..., subsample=True) to condition on a random one."
                )
            warnings.warn(
                f"Conditioning on a random {max_points} of the {X.shape[0]} context points, the most this "
                "neural process was trained on.",
                stacklevel=3,
            )
            rows = np.sort(np.asarray(jax.random.choice(key_subset, X.shape[0], (max_points,), replace=False)))
            X, y = X[rows], y[rows]

        warn_outside_range(X, limits["x_range"], "X", self.x_bounds)
        X = self._to_network_inputs(X)
        y_shift, y_scale = 0.0, 1.0
        if self.standardize and y.size:
            y_shift = float(y.mean())
            spread = float(y.std()) if y.size > 1 else 0.0
            y_scale = (spread if spread > 0 else 1.0) / OUTPUT_SCALE
        y = (y - y_shift) / y_scale

        dtype = self.network.dtype
        x_pad = np.zeros((max_points, 1))
        y_pad = np.zeros(max_points)
        x_pad[: len(y)] = X
        y_pad[: len(y)] = y
        mask = np.arange(max_points) < len(y)
        x_ctx, y_ctx, ctx_mask = jnp.asarray(x_pad, dtype), jnp.asarray(y_pad, dtype), jnp.asarray(mask)

        pseudo_x = pseudo_y = None
        if isinstance(self.network.model, MPNP):
            pseudo_x, pseudo_y = _pseudo_contexts(self.network.model, key_pseudo, x_ctx, y_ctx, ctx_mask)
        return NPPosterior(
            self.network, x_ctx, y_ctx, ctx_mask, pseudo_x, pseudo_y,
            x_bounds=self.x_bounds, standardize=self.standardize, subsample=self.subsample,
            y_shift=jnp.asarray(np.float64(y_shift)), y_scale=jnp.asarray(np.float64(y_scale)),
        )


@eqx.filter_jit
def _pseudo_contexts(model: MPNP, key, x_ctx, y_ctx, ctx_mask, num_sets=None):
    return model.pseudo_contexts(key, x_ctx, y_ctx, ctx_mask, num_sets)


@eqx.filter_jit
def _components(network: NeuralProcessNetwork, x_ctx, y_ctx, ctx_mask, pseudo_x, pseudo_y, x_new):
    model = network.model
    if isinstance(model, MPNP):
        return model.predict_with_pseudo(x_ctx, y_ctx, ctx_mask, pseudo_x, pseudo_y, x_new)
    return model(x_ctx, y_ctx, ctx_mask, x_new)


class NPPosterior(eqx.Module):
    """A neural process conditioned on a context, padded to the network's point limit.

    Attributes
    ----------
    network : NeuralProcessNetwork
    x_context, y_context, context_mask : arrays (N, 1), (N,), (N,)
        The padded context on the network's scale; ``context_mask`` is True at the real
        points.
    pseudo_x, pseudo_y : arrays (K, P, 1) and (K, P), or None
        The MPNP pseudo context sets drawn at fit time, on the network's scale. ``None``
        for CNP and CANP.
    x_bounds, standardize, subsample
        The settings of the :class:`NPModel` that made this posterior.
    y_shift, y_scale : scalar arrays
        Outputs on the user's scale are ``y_shift + y_scale * y`` for network outputs ``y``.
    """

    network: NeuralProcessNetwork
    x_context: Float[Array, "N 1"]
    y_context: Float[Array, " N"]
    context_mask: Bool[Array, " N"]
    pseudo_x: Float[Array, "K P 1"] | None = None
    pseudo_y: Float[Array, "K P"] | None = None
    x_bounds: tuple[float, float] | None = eqx.field(static=True, default=None)
    standardize: bool = eqx.field(static=True, default=False)
    subsample: bool = eqx.field(static=True, default=False)
    # Arrays rather than static fields, so that a refit with other data reuses the compiled
    # prediction (the BO loop refits every iteration).
    y_shift: Float[Array, ""] = 0.0
    y_scale: Float[Array, ""] = 1.0

    @property
    def model(self) -> NPModel:
        return NPModel(self.network, x_bounds=self.x_bounds, standardize=self.standardize, subsample=self.subsample)

    @property
    def num_context(self) -> int:
        return int(jnp.sum(self.context_mask))

    def _network_inputs(self, X_new) -> Array:
        if isinstance(X_new, jax.core.Tracer):
            # Inside a jitted acquisition search the values are unknown, so only the shape
            # is checked. The search stays inside the unit cube, which the loop maps to x_bounds.
            if X_new.ndim == 1:
                X_new = X_new[:, None]
            if X_new.ndim != 2 or X_new.shape[1] != 1:
                raise ValueError(f"X_new must have shape (m, 1) or (m,), got {tuple(X_new.shape)}.")
            return self.model._to_network_inputs(X_new).astype(self.x_context.dtype)
        X_new = as_inputs(X_new, "X_new")
        warn_outside_range(X_new, self.network.limits["x_range"], "X_new", self.x_bounds)
        return jnp.asarray(self.model._to_network_inputs(X_new), self.x_context.dtype)

    def predict(self, X_new: ArrayLike, latent: bool = False) -> dist.Distribution:
        """Posterior predictive of the outputs at ``X_new`` (``(m, 1)`` or ``(m,)``), batch shape ``(m,)``.

        A neural process trained on noisy outputs predicts noisy outputs, so ``latent=True``
        (a request for the noise-free function) returns the same distribution.
        """
        del latent
        x_new = self._network_inputs(X_new)
        mean, sd = _components(
            self.network, self.x_context, self.y_context, self.context_mask, self.pseudo_x, self.pseudo_y, x_new
        )
        mean, sd = self.y_shift + self.y_scale * mean, self.y_scale * sd
        if self.pseudo_x is None:
            return dist.Normal(mean, sd)
        # Components on the last axis: (K, m) -> (m, K), equal weights 1/K.
        components = dist.Normal(mean.T, sd.T)
        mixing = dist.Categorical(logits=jnp.zeros(mean.T.shape, mean.dtype))
        return dist.MixtureSameFamily(mixing, components)

    def sample_functions(self, key, X_new, num_samples: int) -> Float[Array, "s m"]:
        """Draw ``num_samples`` mean functions at ``X_new`` from the martingale posterior (MPNP), shape ``(s, m)``.

        Each draw is the predictive mean given the context joined with a fresh pseudo
        context set: the mean function of one completion of the data, which is how a
        martingale posterior represents uncertainty about the function. CNP and CANP
        have no such draws and raise ``NotImplementedError``.
        """
        if self.pseudo_x is None:
            raise NotImplementedError(
                "CNP and CANP predict each point's marginal distribution, not joint function samples, so "
                "Thompson sampling and batch acquisition need another model (mpnp, or a process); use the "
                "acquisition logei, ucb or pi."
            )
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}.")
        x_new = self._network_inputs(X_new)
        model = self.network.model
        pseudo_x, pseudo_y = _pseudo_contexts(model, key, self.x_context, self.y_context, self.context_mask, num_samples)
        means, _ = _components(
            self.network, self.x_context, self.y_context, self.context_mask, pseudo_x, pseudo_y, x_new
        )
        return self.y_shift + self.y_scale * means
