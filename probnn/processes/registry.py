"""Regression models of :mod:`probnn.processes` by name, as the ``probnn fit`` command uses them.

Every network kernel here is a depth-3 ReLU NNGP with one input lengthscale per feature
(ARD on the first layer), for inputs standardised with training statistics.
"""

from __future__ import annotations

from typing import Callable

from probnn.kernels import NNGP, NTK, RBF, Matern52
from probnn.priors import BurrXII, half_cauchy, inverse_gamma, log_normal
from probnn.processes.exact import GaussianProcess, StudentTProcess
from probnn.processes.scale_mixture import ScaleMixtureProcess


def _nngp(dim: int) -> NNGP:
    return NNGP(depth=3, activation="relu").with_input_dim(dim)


def _scale_mixture(prior_factory):
    def build(dim: int, **settings):
        return ScaleMixtureProcess(_nngp(dim), prior_factory(), **settings)

    return build


def _neural_process(checkpoint: str):
    def build(dim: int, **settings):
        # A neural process has no hyperparameters, so the fitting settings do not apply.
        del settings
        from probnn.np import NPModel

        if dim != 1:
            raise ValueError(
                f"The neural process {checkpoint} takes 1-d inputs (it was trained on 1-d tasks), but the data "
                f"has {dim} features; choose a process model such as gp-rbf or tp-nngp for this dataset."
            )
        # Inputs arrive standardised, so most of them fall in the network's range [-2, 2].
        return NPModel(checkpoint, standardize=True, subsample=True)

    return build


#: name -> (constructor taking the input dimension and process settings, description)
REGRESSION_MODELS: dict[str, tuple[Callable, str]] = {
    "gp-nngp": (
        lambda dim, **settings: GaussianProcess(_nngp(dim), **settings),
        "Gaussian process with the depth-3 ReLU NNGP kernel (infinitely wide BNN)",
    ),
    "tp-nngp": (
        lambda dim, **settings: StudentTProcess(_nngp(dim), **settings),
        "Student-t process: NNGP with an inverse-gamma last-layer variance, in closed form",
    ),
    "smnngp-inverse-gamma": (
        _scale_mixture(inverse_gamma),
        "scale mixture of NNGPs, inverse-gamma prior, by quadrature (the Student-t process)",
    ),
    "smnngp-burr": (
        _scale_mixture(lambda: BurrXII(2.0, 2.0)),
        "scale mixture of NNGPs with a Burr type XII last-layer variance prior",
    ),
    "smnngp-half-cauchy": (
        _scale_mixture(half_cauchy),
        "scale mixture of NNGPs with a half-Cauchy last-layer variance prior",
    ),
    "smnngp-log-normal": (
        _scale_mixture(log_normal),
        "scale mixture of NNGPs with a log-normal last-layer variance prior",
    ),
    "gp-ntk": (
        lambda dim, **settings: GaussianProcess(NTK(depth=3, activation="relu").with_input_dim(dim), **settings),
        "Gaussian process with the depth-3 ReLU neural tangent kernel",
    ),
    "gp-rbf": (
        lambda dim, **settings: GaussianProcess(RBF().with_input_dim(dim), **settings),
        "Gaussian process with an ARD RBF kernel",
    ),
    "gp-matern": (
        lambda dim, **settings: GaussianProcess(Matern52().with_input_dim(dim), **settings),
        "Gaussian process with an ARD Matern-5/2 kernel",
    ),
    "mpnp": (
        _neural_process("mpnp-rbf"),
        "martingale posterior neural process trained on 1-d RBF GP tasks (1-d data; at most 50 points, "
        "a random subset of larger training sets)",
    ),
    "canp": (
        _neural_process("canp-rbf"),
        "conditional attentive neural process trained on 1-d RBF GP tasks (1-d data, at most 50 points)",
    ),
    "cnp": (
        _neural_process("cnp-rbf"),
        "conditional neural process trained on 1-d RBF GP tasks (1-d data, at most 50 points)",
    ),
}


def make_regression_model(name: str, dim: int, **settings):
    """Build the named model for ``dim`` input features.

    ``settings`` go to the process constructor (``num_restarts``, ``max_iterations``, ...).
    Raises ``ValueError`` naming the choices for an unknown name.
    """
    key = name.lower()
    if key not in REGRESSION_MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {', '.join(REGRESSION_MODELS)}.")
    factory, _ = REGRESSION_MODELS[key]
    return factory(dim, **settings)
