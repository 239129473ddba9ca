"""Maximisation of an acquisition function over the unit cube.

Sobol raw samples locate promising regions; the best of them start a multi-start L-BFGS-B
run (scipy) with exact JAX gradients. All starts are optimised together as one problem
whose objective is the sum of the per-start values: the gradient separates by start, and
one scipy run costs far less Python overhead than one run per start.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from scipy.stats import qmc


class CandidateSet(NamedTuple):
    """Optimised candidates on the unit cube, best first, with their acquisition values."""

    X: np.ndarray
    values: np.ndarray


def sobol_points(num: int, dim: int, seed: int) -> np.ndarray:
    """Scrambled Sobol points on the unit cube, deterministic given ``seed``.

    ``num`` need not be a power of two: the first ``num`` points of the next power-of-two
    sequence are returned.
    """
    sampler = qmc.Sobol(dim, scramble=True, seed=seed)
    power = max(int(np.ceil(np.log2(max(num, 1)))), 0)
    return sampler.random_base2(power)[:num]


def _finite_or_floor(values):
    return jnp.where(jnp.isfinite(values), values, -jnp.inf)


def optimize_acquisition(
    acquisition: Callable,
    params,
    dim: int,
    *,
    seed: int,
    num_raw_samples: int = 1024,
    num_starts: int = 8,
    max_iterations: int = 100,
) -> CandidateSet:
    """Maximise ``acquisition`` over ``[0, 1]^dim``.

    Parameters
    ----------
    acquisition : callable
        Pure function ``acquisition(params, X)`` from a pytree of parameters and an
        ``(m, dim)`` array to ``(m,)`` values, larger is better. Pass a module-level
        function: it is compiled once and reused while ``params`` keeps its shapes.
    params : pytree
        Arrays the acquisition depends on (posterior, incumbent, ...).
    seed : int
        Seed of the Sobol raw samples.
    num_raw_samples, num_starts, max_iterations : int
        Raw sample count, number of L-BFGS-B starts taken from the best raw samples, and
        L-BFGS-B iterations.

    Returns
    -------
    CandidateSet
        The optimised starts followed by the remaining raw samples, sorted by value
        (best first), so callers can fall back to the next distinct candidate. All
        points lie inside the cube.
    """
    raw = sobol_points(num_raw_samples, dim, seed)
    raw_values = np.asarray(_evaluate(acquisition, params, jnp.asarray(raw)))
    order = np.argsort(-np.nan_to_num(raw_values, nan=-np.inf))
    num_starts = min(num_starts, num_raw_samples)
    starts = raw[order[:num_starts]]

    def objective(flat):
        value, grad = _value_and_grad(acquisition, params, jnp.asarray(flat.reshape(num_starts, dim)))
        value = float(value)
        grad = np.asarray(grad, dtype=np.float64).ravel()
        if not np.isfinite(value) or not np.all(np.isfinite(grad)):
            # Ends the line search step instead of crashing; L-BFGS-B backs off.
            return np.inf, np.zeros_like(flat)
        return -value, -grad

    result = scipy.optimize.minimize(
        objective,
        starts.ravel(),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, 1.0)] * (num_starts * dim),
        options={"maxiter": max_iterations},
    )
    optimized = np.clip(result.x.reshape(num_starts, dim), 0.0, 1.0)
    optimized_values = np.asarray(_evaluate(acquisition, params, jnp.asarray(optimized)))

    X = np.concatenate([optimized, raw[order[num_starts:]]])
    values = np.concatenate([optimized_values, raw_values[order[num_starts:]]])
    values = np.nan_to_num(values, nan=-np.inf)
    ranking = np.argsort(-values, kind="stable")
    return CandidateSet(X[ranking], values[ranking])


@eqx.filter_jit
def _evaluate(acquisition, params, X):
    return _finite_or_floor(acquisition(params, X))


@eqx.filter_jit
def _value_and_grad(acquisition, params, X):
    def total(X):
        return jnp.sum(_finite_or_floor(acquisition(params, X)))

    return jax.value_and_grad(total)(X)
