"""Surrogate models available to the Bayesian optimization loop, by name."""

from __future__ import annotations

from typing import Callable

from probnn.kernels import NNGP, RBF, Matern52
from probnn.processes import GaussianProcess, StudentTProcess

#: Restarts of the hyperparameter fit inside the loop; the first start is always the
#: previous iteration's optimum, so few random restarts are needed.
LOOP_RESTARTS = 3


def _gp_rbf(dim: int):
    return GaussianProcess(RBF().with_input_dim(dim), num_restarts=LOOP_RESTARTS)


def _gp_matern(dim: int):
    return GaussianProcess(Matern52().with_input_dim(dim), num_restarts=LOOP_RESTARTS)


def _gp_nngp(dim: int):
    return GaussianProcess(NNGP(depth=3, activation="relu").with_input_dim(dim), num_restarts=LOOP_RESTARTS)


def _tp_nngp(dim: int):
    return StudentTProcess(NNGP(depth=3, activation="relu").with_input_dim(dim), num_restarts=LOOP_RESTARTS)


SURROGATES: dict[str, Callable[[int], object] | None] = {
    "tp-nngp": _tp_nngp,
    "gp-nngp": _gp_nngp,
    "gp-matern": _gp_matern,
    "gp-rbf": _gp_rbf,
    "random": None,
}

SURROGATE_DESCRIPTIONS = {
    "tp-nngp": "Student-t process with a depth-3 ReLU NNGP kernel (inverse-gamma last-layer variance)",
    "gp-nngp": "Gaussian process with a depth-3 ReLU NNGP kernel (infinitely wide BNN)",
    "gp-matern": "Gaussian process with an ARD Matern-5/2 kernel",
    "gp-rbf": "Gaussian process with an ARD RBF kernel",
    "random": "uniform random search (baseline, no model)",
}


def make_surrogate(name: str, dim: int):
    """Build the named surrogate model for ``dim`` inputs scaled to the unit cube.

    Returns ``None`` for ``random``. Raises ``ValueError`` naming the choices for unknown names.
    """
    key = name.lower()
    if key not in SURROGATES:
        raise ValueError(f"Unknown surrogate {name!r}; choose one of {', '.join(SURROGATES)}.")
    factory = SURROGATES[key]
    return None if factory is None else factory(dim)
