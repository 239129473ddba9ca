"""A trained neural process as a model with probnn's fit/predict interface.

Fitting a neural process stores the context, padded to the number of points it was
trained for so that every fit has the same shapes and predictions compile once. For an
MPNP, fitting also draws the ``K`` pseudo context sets, so one posterior always returns
the same predictive. Predictives are numpyro distributions with batch shape ``(m,)``: a
``Normal`` for CNP and CANP, and for MPNP a ``MixtureSameFamily`` of ``K`` equally
weighted Normals, one per pseudo context set.
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

__all__ = ["NPModel", "NPPosterior"]


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


def warn_outside_range(x: np.ndarray, x_range, name: str) -> None:
    """Warn when inputs leave the range the network was trained on, where its predictions are untested."""
    low, high = x_range
    if x.size and (x.min() < low or x.max() > high):
        warnings.warn(
            f"{name} has values in [{x.min():.3g}, {x.max():.3g}], outside the training range [{low}, {high}] of "
            "this neural process; predictions there are extrapolations. Rescale the inputs into that range.",
            stacklevel=3,
        )


class NPModel(eqx.Module):
    """A trained neural process used as a regression model on 1-d inputs.

    Parameters
    ----------
    network : NeuralProcessNetwork, str or path
        A loaded network, or a shipped checkpoint name or a folder for :func:`load_np`.

    Examples
    --------
    >>> model = NPModel("runs/mpnp-rbf")  # doctest: +SKIP
    >>> posterior = model.fit(X, y, key=jax.random.key(0))  # doctest: +SKIP
    >>> posterior.predict(X_new).mean  # doctest: +SKIP
    """

    network: NeuralProcessNetwork

    def __init__(self, network: NeuralProcessNetwork | str | os.PathLike):
        self.network = network if isinstance(network, NeuralProcessNetwork) else load_np(network)

    def fit(self, X: ArrayLike, y: ArrayLike, *, key=None, num_restarts=None) -> "NPPosterior":
        """Condition on the context ``(X, y)``; ``X`` may be empty.

        ``key`` draws the MPNP pseudo context sets (default ``jax.random.key(0)``);
        ``num_restarts`` is accepted for the common model interface, because a neural
        process has no hyperparameters to fit.
        """
        del num_restarts
        X = as_inputs(X, "X")
        y = np.asarray(y, dtype=float)
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must be 1-d with one target per row of X ({X.shape[0]}); got shape {y.shape}.")
        if not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or infinite values; drop those rows first.")
        limits = self.network.limits
        max_points = int(limits["max_points"])
        if X.shape[0] > max_points:
            raise ValueError(
                f"{X.shape[0]} context points exceed this neural process's limit of {max_points} points per task; "
                "pass a subset."
            )
        warn_outside_range(X, limits["x_range"], "X")

        dtype = self.network.dtype
        x_pad = np.zeros((max_points, 1))
        y_pad = np.zeros(max_points)
        x_pad[: len(y)] = X
        y_pad[: len(y)] = y
        mask = np.arange(max_points) < len(y)
        x_ctx, y_ctx, ctx_mask = jnp.asarray(x_pad, dtype), jnp.asarray(y_pad, dtype), jnp.asarray(mask)

        pseudo_x = pseudo_y = None
        if isinstance(self.network.model, MPNP):
            key = jax.random.key(0) if key is None else key
            pseudo_x, pseudo_y = _pseudo_contexts(self.network.model, key, x_ctx, y_ctx, ctx_mask)
        return NPPosterior(self.network, x_ctx, y_ctx, ctx_mask, pseudo_x, pseudo_y)


@eqx.filter_jit
def _pseudo_contexts(model: MPNP, key, x_ctx, y_ctx, ctx_mask):
    return model.pseudo_contexts(key, x_ctx, y_ctx, ctx_mask)


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
        The padded context; ``context_mask`` is True at the real points.
    pseudo_x, pseudo_y : arrays (K, P, 1) and (K, P), or None
        The MPNP pseudo context sets drawn at fit time. ``None`` for CNP and CANP.
    """

    network: NeuralProcessNetwork
    x_context: Float[Array, "N 1"]
    y_context: Float[Array, " N"]
    context_mask: Bool[Array, " N"]
    pseudo_x: Float[Array, "K P 1"] | None = None
    pseudo_y: Float[Array, "K P"] | None = None

    @property
    def model(self) -> NPModel:
        return NPModel(self.network)

    @property
    def num_context(self) -> int:
        return int(jnp.sum(self.context_mask))

    def predict(self, X_new: ArrayLike, latent: bool = False) -> dist.Distribution:
        """Posterior predictive of the outputs at ``X_new`` (``(m, 1)`` or ``(m,)``), batch shape ``(m,)``.

        A neural process trained on noisy outputs predicts noisy outputs, so ``latent=True``
        (a request for the noise-free function) returns the same distribution.
        """
        del latent
        X_new = as_inputs(X_new, "X_new")
        warn_outside_range(X_new, self.network.limits["x_range"], "X_new")
        x_new = jnp.asarray(X_new, self.x_context.dtype)
        mean, sd = _components(
            self.network, self.x_context, self.y_context, self.context_mask, self.pseudo_x, self.pseudo_y, x_new
        )
        if self.pseudo_x is None:
            return dist.Normal(mean, sd)
        # Components on the last axis: (K, m) -> (m, K), equal weights 1/K.
        components = dist.Normal(mean.T, sd.T)
        mixing = dist.Categorical(logits=jnp.zeros(mean.T.shape, mean.dtype))
        return dist.MixtureSameFamily(mixing, components)

    def sample_functions(self, key, X_new, num_samples: int):
        """Not available: these neural processes predict marginals only, not joint function draws."""
        raise NotImplementedError(
            "CNP, CANP and MPNP predict each point's marginal distribution, not joint function samples, so "
            "Thompson sampling and batch acquisition need another model; use the acquisition logei, ucb or pi."
        )
