"""Bayesian neural network surrogates, each with the ``fit``/``predict`` interface of the processes.

- :class:`HMCNetwork`: all weights and the noise sampled by NUTS (or HMC), warm-started.
- :class:`SGMCMCNetwork`: the same model sampled by SGHMC or SGLD on minibatches.
- :class:`DeepEnsemble`: independently trained networks in one vmapped program.
- :class:`LaplaceNetwork`: a MAP network with a last-layer, full-GGN or Kronecker-factored
  Laplace posterior and the linearised predictive.
- :class:`DeepKernelGP`: an exact GP on learned network features (deep kernel learning).
- :class:`PartiallyStochasticNetwork`: a trained body with a conjugate Bayesian last layer.
- :class:`PartiallySampledNetwork`: a trained body with NUTS over its last layers.

The infinite-width BNN is the NNGP Gaussian process of :mod:`probnn.processes`. The BNN
models themselves are numpyro models in :mod:`probnn.bnn.models`.
"""

from probnn.bnn.dkl import DeepKernelGP, DeepKernelPosterior
from probnn.bnn.ensemble import DeepEnsemble, EnsemblePosterior
from probnn.bnn.hmc import HMCNetwork, SampledNetworkPosterior, SGMCMCNetwork
from probnn.bnn.laplace import LaplaceNetwork, LaplacePosterior
from probnn.bnn.models import NetworkPrior, bnn_regression, plugin_regression
from probnn.bnn.partial import (
    PartiallySampledNetwork,
    PartiallySampledPosterior,
    PartiallyStochasticNetwork,
    PartiallyStochasticPosterior,
)

__all__ = [
    "DeepEnsemble",
    "DeepKernelGP",
    "DeepKernelPosterior",
    "EnsemblePosterior",
    "HMCNetwork",
    "LaplaceNetwork",
    "LaplacePosterior",
    "NetworkPrior",
    "PartiallySampledNetwork",
    "PartiallySampledPosterior",
    "PartiallyStochasticNetwork",
    "PartiallyStochasticPosterior",
    "SGMCMCNetwork",
    "SampledNetworkPosterior",
    "bnn_regression",
    "plugin_regression",
]
