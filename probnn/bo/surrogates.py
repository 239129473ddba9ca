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


def _bo_nngp(dim: int) -> NNGP:
    """Depth-3 ReLU NNGP for inputs in the unit cube, in its correlation form.

    The raw NNGP's prior variance grows with the distance from the origin, so far from the
    data the posterior is most uncertain in the corners of the box and the acquisition
    function keeps proposing corners. Centring the inputs at the middle of the cube and
    normalising the kernel to unit prior variance (the network output divided by its prior
    standard deviation) removes that pull. In a four-seed trial on Hartmann-6 (10 Sobol
    points and 40 iterations) the Student-t surrogate's median regret was about 2 with
    centring alone and 0.17 with centring and normalisation.
    """
    return NNGP(depth=3, activation="relu", input_offset=0.5, normalize=True).with_input_dim(dim)


def _gp_nngp(dim: int):
    return GaussianProcess(_bo_nngp(dim), num_restarts=LOOP_RESTARTS)


def _tp_nngp(dim: int):
    return StudentTProcess(_bo_nngp(dim), num_restarts=LOOP_RESTARTS)


SURROGATES: dict[str, Callable[[int], object] | None] = {
    "tp-nngp": _tp_nngp,
    "gp-nngp": _gp_nngp,
    "gp-matern": _gp_matern,
    "gp-rbf": _gp_rbf,
    "random": None,
}

SURROGATE_DESCRIPTIONS = {
    "tp-nngp": "Student-t process with a depth-3 ReLU NNGP correlation kernel (inverse-gamma last-layer variance)",
    "gp-nngp": "Gaussian process with a depth-3 ReLU NNGP correlation kernel (infinitely wide BNN)",
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
