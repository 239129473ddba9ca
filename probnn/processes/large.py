"""Fitting the processes to large training sets: exact or inducing-point, and on how many points.

Two costs grow with the number of training points ``n``. Fitting hyperparameters by the
exact marginal likelihood needs a factorisation per L-BFGS step, ``O(n^3)``; conditioning
needs one. :func:`fit_large` therefore fits the hyperparameters on a random subset of at
most ``max_fit_points`` points and then conditions on all ``n``:

- up to :data:`SPARSE_ABOVE` points, exactly (above 4,096 through a row-blocked Gram
  matrix factorised in place, about 3.4 GB in float64 at 20,000 points);
- above it, by the inducing-point approximation of :mod:`probnn.processes.sparse`,
  ``O(n M^2)``, whose inducing inputs are fitted on the subset together with the
  hyperparameters.
"""

from __future__ import annotations

import numpy as np

from probnn.processes.exact import _ExactProcess
from probnn.processes.sparse import DEFAULT_NUM_INDUCING, SparseProcess

#: Ways to condition on the full data.
APPROXIMATIONS = ("auto", "exact", "sparse")

#: ``approximation="auto"`` conditions exactly up to this many training points.
SPARSE_ABOVE = 20_000

#: Default subset size for fitting hyperparameters by the exact marginal likelihood.
EXACT_FIT_POINTS = 3_000

#: Default subset size for fitting hyperparameters and inducing inputs by the sparse bound.
SPARSE_FIT_POINTS = 10_000


def choose_approximation(num_data: int, approximation: str = "auto") -> str:
    """Return ``"exact"`` or ``"sparse"``: the requested one, or by size for ``"auto"``."""
    if approximation not in APPROXIMATIONS:
        raise ValueError(f"approximation must be one of {APPROXIMATIONS}, got {approximation!r}.")
    if approximation == "auto":
        return "sparse" if num_data > SPARSE_ABOVE else "exact"
    return approximation


def default_fit_points(method: str) -> int:
    """Return the default subset size for fitting hyperparameters with ``"exact"`` or ``"sparse"``."""
    return SPARSE_FIT_POINTS if method == "sparse" else EXACT_FIT_POINTS


def fit_large(
    model: _ExactProcess,
    X,
    y,
    *,
    key,
    approximation: str = "auto",
    num_inducing: int = DEFAULT_NUM_INDUCING,
    inducing_init: str = "kmeans",
    max_fit_points: int | None = None,
    seed: int = 0,
):
    """Fit ``model`` on a subset of ``(X, y)`` and condition it on all of it.

    Parameters
    ----------
    model : GaussianProcess, StudentTProcess or ScaleMixtureProcess
    X, y : arrays of shape (n, d) and (n,)
    key : jax.random key
        Seeds the restarts and the inducing-input initialisation.
    approximation : {"auto", "exact", "sparse"}
        ``"auto"`` is exact up to :data:`SPARSE_ABOVE` points and sparse above.
    num_inducing, inducing_init
        As for :class:`~probnn.processes.sparse.SparseProcess`.
    max_fit_points : int, optional
        Largest subset the hyperparameters are fitted on; by default
        :data:`EXACT_FIT_POINTS` (exact) or :data:`SPARSE_FIT_POINTS` (sparse).
    seed : int
        Seed of the subset.

    Returns
    -------
    posterior
        An :class:`~probnn.processes.ExactPosterior` or a
        :class:`~probnn.processes.sparse.SparsePosterior`, conditioned on all rows.
    """
    X = np.asarray(X)
    y = np.asarray(y)
    n = X.shape[0]
    method = choose_approximation(n, approximation)
    if method == "sparse":
        model = SparseProcess(model, num_inducing, inducing_init=inducing_init)
    limit = default_fit_points(method) if max_fit_points is None else max_fit_points
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"max_fit_points must be a positive integer or None, got {max_fit_points!r}.")
    if n <= limit:
        return model.fit(X, y, key=key)
    rows = np.sort(np.random.default_rng(seed).choice(n, int(limit), replace=False))
    fitted = model.fit(X[rows], y[rows], key=key)
    return fitted.model.condition(X, y)
