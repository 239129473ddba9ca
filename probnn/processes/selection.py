"""Hyperparameter selection by validation log likelihood over a grid.

The marginal likelihood is the default way to set hyperparameters. Some, such as the shape
of a scale prior, are barely identified by it, because all targets share one draw of the
last-layer variance. For those a held-out split gives a direct criterion: condition on the
training part, score the mean predictive log density of the validation part, and keep the
best grid point.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import equinox as eqx
import jax
import numpy as np

from probnn.kernels.base import check_inputs
from probnn.kernels.linalg import CholeskyError
from probnn.priors.scale import prior_parameters, rebuild_prior
from probnn.processes._data import check_training_data


@dataclass(frozen=True)
class GridSearchResult:
    """Outcome of :func:`select_by_validation`.

    Attributes
    ----------
    posterior
        The best model conditioned on all of ``X, y``.
    best : dict
        The chosen value for each grid name.
    table : list of dict
        One row per grid point: its values and ``validation_nll`` (mean per point).
    """

    posterior: object
    best: dict
    table: list


def _set_hyperparameter(model, name: str, value):
    """Return ``model`` with the hyperparameter at dotted path ``name`` set to ``value``."""
    parts = name.split(".")
    if parts[0] == "scale_prior":
        if len(parts) != 2 or not hasattr(model, "scale_prior"):
            raise ValueError(
                f"Grid name {name!r} needs a model with a scale prior and one parameter name, "
                "e.g. 'scale_prior.concentration'."
            )
        parameters = prior_parameters(model.scale_prior)
        if parts[1] not in parameters:
            raise ValueError(
                f"The scale prior {type(model.scale_prior).__name__} has no parameter {parts[1]!r}; "
                f"its parameters are {sorted(parameters)}."
            )
        parameters[parts[1]] = np.asarray(value, dtype=np.asarray(parameters[parts[1]]).dtype)
        return eqx.tree_at(lambda m: m.scale_prior, model, rebuild_prior(model.scale_prior, parameters))

    def locate(m):
        for part in parts:
            m = getattr(m, part)
        return m

    try:
        current = np.asarray(locate(model))
    except AttributeError:
        raise ValueError(
            f"Grid name {name!r} is not a hyperparameter of {type(model).__name__}. Use dotted "
            "attribute paths such as 'noise', 'kernel.weight_variance' or 'scale_prior.rate'."
        ) from None
    new = np.broadcast_to(np.asarray(value, dtype=current.dtype), current.shape)
    if not np.all(np.isfinite(new)) or np.any(new < 0):
        raise ValueError(f"Grid value {value!r} for {name!r} must be finite and non-negative.")
    return eqx.tree_at(locate, model, jax.numpy.asarray(new))


def select_by_validation(
    model,
    X,
    y,
    grid: dict,
    *,
    validation_fraction: float = 0.1,
    key=None,
) -> GridSearchResult:
    """Choose hyperparameters on a grid by the validation negative log likelihood.

    Parameters
    ----------
    model : GaussianProcess, StudentTProcess or ScaleMixtureProcess
        Values not on the grid are used as they are (no marginal-likelihood fitting).
    X : array of shape (n, d)
    y : array of shape (n,)
    grid : dict
        Maps dotted hyperparameter names (``"noise"``, ``"kernel.weight_variance"``,
        ``"scale_prior.concentration"``, ...) to sequences of values. Every combination
        is tried.
    validation_fraction : float
        Share of the points held out, drawn at random with ``key``.
    key : jax.random key
        Chooses the validation points.

    Returns
    -------
    GridSearchResult
    """
    X, y = check_training_data(X, y)
    check_inputs(X, "X")
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"grid must be a non-empty dict of name -> values, got {grid!r}.")
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must lie in (0, 1), got {validation_fraction!r}.")
    n = X.shape[0]
    num_validation = int(round(validation_fraction * n))
    if num_validation < 1 or n - num_validation < 2:
        raise ValueError(
            f"{n} points leave no room for a validation split of {validation_fraction:.0%}; "
            "use more data or fit by the marginal likelihood."
        )
    if key is None:
        raise ValueError("select_by_validation needs key=jax.random.key(seed) to draw the validation points.")
    names = list(grid)
    values = [list(np.atleast_1d(np.asarray(grid[name], dtype=float))) for name in names]
    if any(len(v) == 0 for v in values):
        raise ValueError(f"Every grid entry needs at least one value; got {grid!r}.")

    order = np.asarray(jax.random.permutation(key, n))
    validation, train = order[:num_validation], order[num_validation:]
    table = []
    best_row, best_nll, best_model = None, np.inf, None
    for combination in itertools.product(*values):
        candidate = model
        for name, value in zip(names, combination):
            candidate = _set_hyperparameter(candidate, name, value)
        row = dict(zip(names, (float(v) for v in combination)))
        try:
            posterior = candidate.condition(X[train], y[train])
            nll = float(-np.mean(np.asarray(posterior.predict(X[validation]).log_prob(y[validation]))))
        except (FloatingPointError, CholeskyError):
            nll = np.inf
        row["validation_nll"] = nll
        table.append(row)
        if np.isfinite(nll) and nll < best_nll:
            best_row, best_nll, best_model = row, nll, candidate
    if best_model is None:
        raise FloatingPointError(
            "No grid point gave a finite validation log likelihood; widen the grid or raise the noise."
        )
    best = {name: best_row[name] for name in names}
    return GridSearchResult(posterior=best_model.condition(X, y), best=best, table=table)
