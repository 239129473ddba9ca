"""Validation, standardisation and padding of training data for the exact processes."""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from probnn.kernels.base import check_inputs
from probnn.kernels.linalg import NumericalWarning

#: Smallest padded size. Training sets are padded to the next bucket, so the compiled
#: fit and prediction are reused while a BO loop adds one point at a time.
MIN_BUCKET = 16

#: Up to this size buckets are powers of two: padding is cheap there, and each new
#: bucket costs several compilations of a few seconds each.
POWER_OF_TWO_UNTIL = 128


def bucket_size(n: int) -> int:
    """Round ``n`` up to the next padded size: 16, 32, 64, 128, 160, 192, 224, 256, 320, ...

    Up to 128 the sizes are powers of two. Above, they are ``2^k``, ``1.25 * 2^k``,
    ``1.5 * 2^k`` and ``1.75 * 2^k``, so padding adds at most 25% to the size (and about
    twice that to the cubic cost) while the number of shapes grows only logarithmically.
    """
    if n <= MIN_BUCKET:
        return MIN_BUCKET
    power = 2 ** math.ceil(math.log2(n))
    if power <= POWER_OF_TWO_UNTIL:
        return power
    power //= 2
    for factor in (1.25, 1.5, 1.75, 2.0):
        size = int(power * factor)
        if size >= n:
            return size
    raise AssertionError("unreachable: 2 * power >= n")


def float_dtype():
    """Return the floating dtype JAX computes in: float64 when x64 is enabled, else float32."""
    return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


def warn_precision(*arrays) -> None:
    """Warn when inputs are single precision or when JAX's float64 mode is off."""
    if not jax.config.read("jax_enable_x64"):
        warnings.warn(
            "JAX float64 mode is off, so Gaussian process algebra runs in float32 and may be "
            "inaccurate. Enable it with jax.config.update('jax_enable_x64', True) before "
            "creating arrays.",
            NumericalWarning,
            stacklevel=4,
        )
        return
    for array in arrays:
        dtype = np.asarray(array).dtype
        if np.issubdtype(dtype, np.floating) and np.finfo(dtype).bits < 64:
            warnings.warn(
                f"Data of dtype {dtype} was converted to float64; pass float64 arrays to avoid "
                "the rounding of the original values.",
                NumericalWarning,
                stacklevel=4,
            )
            return


def check_training_data(X, y) -> tuple[np.ndarray, np.ndarray]:
    """Return ``X`` as ``(n, d)`` and ``y`` as ``(n,)``, or raise ``ValueError`` naming the shapes."""
    if np.ndim(X) not in (1, 2):
        raise ValueError(
            f"X must have shape (n, d), or (n,) for scalar inputs; got X of shape {np.shape(X)} "
            f"with y of shape {np.shape(y)}."
        )
    X = check_inputs(X, "X")
    y_array = np.asarray(y)
    if y_array.ndim == 2 and y_array.shape[1] == 1:
        y_array = y_array[:, 0]
    if y_array.ndim != 1:
        raise ValueError(
            f"y must have shape (n,) or (n, 1); got shape {np.shape(y)} with X of shape {X.shape}."
        )
    if y_array.shape[0] != X.shape[0]:
        raise ValueError(
            f"X and y have different numbers of rows: X has shape {X.shape}, y has shape "
            f"{np.shape(y)}. Pass one target per input row."
        )
    if not np.issubdtype(y_array.dtype, np.number):
        raise ValueError(f"y must be numeric, got dtype {y_array.dtype}.")
    if not np.all(np.isfinite(y_array)):
        rows = np.nonzero(~np.isfinite(y_array))[0][:5].tolist()
        raise ValueError(f"y contains NaN or infinite values (rows {rows}); remove those rows.")
    return X, y_array


def check_test_inputs(X_new, dim: int, dtype=None):
    """Return ``X_new`` as an ``(m, dim)`` array of ``dtype`` (default: the float dtype), or raise ``ValueError``.

    Tracers pass through unchecked, so predictions can be jitted and differentiated in
    ``X_new``.
    """
    if isinstance(X_new, jax.core.Tracer):
        return X_new
    X_new = check_inputs(X_new, "X_new")
    if X_new.shape[1] != dim:
        raise ValueError(
            f"X_new has {X_new.shape[1]} columns but the model was fitted on {dim}; X_new has shape {X_new.shape}."
        )
    return jnp.asarray(X_new, float_dtype() if dtype is None else dtype)


class Standardizer(NamedTuple):
    """Affine map between the original target scale and the standardised one."""

    mean: float
    scale: float
    constant: bool = False

    @classmethod
    def fit(cls, y: np.ndarray) -> "Standardizer":
        """Standardise by the sample mean and standard deviation.

        With no targets the map is the identity; with one target, or constant targets,
        the scale is 1 (and constant targets raise a warning) so nothing divides by zero.
        """
        if y.size == 0:
            return cls(0.0, 1.0)
        mean = float(np.mean(y))
        if y.size == 1:
            return cls(mean, 1.0)
        scale = float(np.std(y))
        if scale <= 1e-12 * max(1.0, abs(mean)):
            warnings.warn(
                f"All {y.size} targets equal {mean:.6g}; the model will predict that constant.",
                NumericalWarning,
                stacklevel=4,
            )
            return cls(mean, 1.0, constant=True)
        return cls(mean, scale)


class PaddedData(NamedTuple):
    """Training data padded to a bucket size; ``mask`` marks the real rows."""

    X: jax.Array
    y: jax.Array
    mask: jax.Array
    n: jax.Array


def pad_training_data(X: np.ndarray, y_standardized: np.ndarray, dim: int | None = None) -> PaddedData:
    """Pad ``X`` with zero rows and ``y`` with zeros up to :func:`bucket_size`.

    Padded rows are removed from the algebra by giving them unit prior variance and
    no covariance with anything (see :func:`masked_covariance`), so they add nothing to
    the log marginal likelihood and do not change any prediction.
    """
    n = X.shape[0]
    size = bucket_size(n)
    dim = X.shape[1] if dim is None else dim
    dtype = float_dtype()
    X_pad = np.zeros((size, dim))
    X_pad[:n] = X
    y_pad = np.zeros(size)
    y_pad[:n] = y_standardized
    mask = np.zeros(size, dtype=bool)
    mask[:n] = True
    return PaddedData(
        jnp.asarray(X_pad, dtype), jnp.asarray(y_pad, dtype), jnp.asarray(mask), jnp.asarray(n, dtype)
    )


def masked_covariance(K, mask):
    """Zero the rows and columns of padded points and put ones on their diagonal."""
    both = mask[:, None] & mask[None, :]
    return jnp.where(both, K, 0.0) + jnp.diag(jnp.where(mask, 0.0, 1.0))
