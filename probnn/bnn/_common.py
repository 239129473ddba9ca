"""Data preparation shared by the network surrogates: checks, standardisation and padding.

The surrogates train on targets standardised by :class:`~probnn.processes._data.Standardizer`
and padded to :func:`~probnn.processes._data.bucket_size` rows, so the compiled training and
prediction programs are reused while a BO loop adds one point at a time. Padded rows carry
zero weight in every loss and sum.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from probnn.processes._data import Standardizer, check_training_data, pad_training_data


class NetworkData(NamedTuple):
    """Standardised training data padded to a bucket size.

    ``X`` is ``(N, d)`` and ``y`` is ``(N,)`` standardised, zero on padded rows.
    ``weights`` is 1 on the ``n`` real rows and 0 on padding. ``n`` is a scalar array, so
    a new point within the same bucket changes values but no shapes.
    """

    X: jax.Array
    y: jax.Array
    weights: jax.Array
    n: jax.Array


def prepare_training_data(X, y) -> tuple[NetworkData, Standardizer]:
    """Check, standardise and pad training data for a network surrogate.

    Parameters
    ----------
    X : array of shape (n, d) or (n,)
    y : array of shape (n,) or (n, 1)

    Returns
    -------
    NetworkData
        Arrays of :func:`~probnn.processes._data.float_dtype`.
    Standardizer
        Maps predictions back with ``mean + scale * value``.

    Raises
    ------
    ValueError
        For malformed data (see :func:`~probnn.processes._data.check_training_data`) or
        no rows at all: a network surrogate has no prior to fall back on.
    """
    X, y = check_training_data(X, y)
    if X.shape[0] < 1:
        raise ValueError(f"Fitting a network surrogate needs at least one training row; got X of shape {X.shape}.")
    standardizer = Standardizer.fit(y)
    padded = pad_training_data(X, (y - standardizer.mean) / standardizer.scale)
    data = NetworkData(padded.X, padded.y, padded.mask.astype(padded.y.dtype), padded.n)
    return data, standardizer


def check_fit_arguments(key, num_restarts) -> bool:
    """Validate the ``key`` and ``num_restarts`` of ``fit`` and return whether to warm-start.

    A BO loop passes ``num_restarts=1`` when the previous fit is a good start, and
    ``None`` for a fresh fit. Any other positive integer also means a fresh fit.
    """
    if key is None:
        raise ValueError("fit needs key=jax.random.key(seed): it draws the network initialisation and minibatches.")
    if num_restarts is not None and (isinstance(num_restarts, bool) or not isinstance(num_restarts, int) or num_restarts < 1):
        raise ValueError(f"num_restarts must be a positive integer or None, got {num_restarts!r}.")
    return num_restarts == 1


def check_positive_integer(value, name: str) -> int:
    """Return ``value`` if it is a positive integer, else raise ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)
