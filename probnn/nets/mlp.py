"""Fully connected networks as equinox modules, and the plug-in protocol they serve."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

#: Activation functions by name.
ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "erf": jax.scipy.special.erf,
}


@runtime_checkable
class MeanFunction(Protocol):
    """A callable pytree ``f(X) -> (n,)``: the mean of a process or of a likelihood."""

    def __call__(self, X: Float[Array, "n d"]) -> Float[Array, " n"]: ...


@runtime_checkable
class FeatureMap(Protocol):
    """A pytree with ``features(X) -> (n, k)``: the input warping of deep kernel learning."""

    def features(self, X: Float[Array, "n d"]) -> Float[Array, "n k"]: ...


def check_activation(name: str) -> str:
    """Return ``name`` if it is a known activation, else raise ``ValueError`` listing them."""
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}.")
    return name


def check_widths(widths, *, allow_empty: bool = False) -> tuple[int, ...]:
    """Return hidden-layer widths as a tuple of positive integers, or raise ``ValueError``.

    ``allow_empty=True`` accepts ``()``, a network without hidden layers.
    """
    widths = tuple(widths)
    if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"widths must be a sequence of positive integers, e.g. (50, 50); got {widths!r}.")
    if not widths and not allow_empty:
        raise ValueError(f"widths must be a non-empty sequence of positive integers, e.g. (50, 50); got {widths!r}.")
    return widths


class MLP(eqx.Module):
    """A fully connected network ``R^d -> R`` (or ``R^k`` with ``out_features=k``).

    Hidden layer ``l`` computes ``h_l = phi(h_{l-1} W_l + b_l)``; the readout is
    ``h_L W_out + b_out`` with no activation. Weights start from ``N(0, 1/fan_in)``
    (LeCun normal) and biases from zero.

    The module is its own parameter pytree, so it serves as a :class:`MeanFunction`
    (``mlp(X)``), as a :class:`FeatureMap` (``mlp.features(X)``, the last hidden layer),
    and as the mean of a likelihood; ``jax.vmap`` over a stacked MLP evaluates an ensemble.

    Parameters
    ----------
    in_features : int
    widths : sequence of int
        Hidden-layer widths, e.g. ``(50, 50)``; ``()`` gives the linear model
        ``X W_out + b_out``, whose :meth:`features` are the inputs themselves.
    key : jax.random key
    activation : str
        ``tanh`` (default), ``relu``, ``gelu``, ``silu`` or ``erf``.
    out_features : int or None
        ``None`` (default) gives outputs of shape ``(n,)``; an integer ``k`` gives ``(n, k)``.
    dtype : dtype, optional
        Parameter dtype; float32 by default, which is what network training needs.
    """

    weights: tuple[Array, ...]
    biases: tuple[Array, ...]
    activation: str = eqx.field(static=True)
    scalar_output: bool = eqx.field(static=True)

    def __init__(self, in_features: int, widths=(50, 50), *, key, activation: str = "tanh", out_features=None, dtype=jnp.float32):
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive integer, got {in_features!r}.")
        widths = check_widths(widths, allow_empty=True)
        self.activation = check_activation(activation)
        self.scalar_output = out_features is None
        sizes = (in_features, *widths, 1 if out_features is None else int(out_features))
        keys = jax.random.split(key, len(sizes) - 1)
        self.weights = tuple(
            jax.random.normal(k, (fan_in, fan_out), dtype) / jnp.sqrt(jnp.asarray(fan_in, dtype))
            for k, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:])
        )
        self.biases = tuple(jnp.zeros((fan_out,), dtype) for fan_out in sizes[1:])

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(w.shape[1] for w in self.weights[:-1])

    @property
    def in_features(self) -> int:
        return self.weights[0].shape[0]

    @property
    def num_features(self) -> int:
        """Width of the last hidden layer, the dimension of :meth:`features`."""
        return self.weights[-1].shape[0]

    def features(self, X: Float[Array, "n d"]) -> Float[Array, "n k"]:
        """Activations of the last hidden layer."""
        if X.shape[-1] != self.in_features:
            raise ValueError(
                f"The network takes {self.in_features} input columns, got X of shape {tuple(X.shape)}; "
                f"pass X of shape (n, {self.in_features})."
            )
        phi = ACTIVATIONS[self.activation]
        h = X.astype(self.weights[0].dtype)
        for W, b in zip(self.weights[:-1], self.biases[:-1]):
            h = phi(h @ W + b)
        return h

    def __call__(self, X: Float[Array, "n d"]) -> Array:
        out = self.features(X) @ self.weights[-1] + self.biases[-1]
        return out[..., 0] if self.scalar_output else out


def mlp_forward(weights, biases, X, activation: str):
    """Forward pass of an MLP given as lists of weight matrices and bias vectors.

    The functional form used inside numpyro models, where each parameter is a sample site.
    Returns outputs of shape ``(n,)``.
    """
    phi = ACTIVATIONS[activation]
    h = X
    for W, b in zip(weights[:-1], biases[:-1]):
        h = phi(h @ W + b)
    return (h @ weights[-1] + biases[-1])[..., 0]
