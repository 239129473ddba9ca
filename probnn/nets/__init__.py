"""Deterministic networks and their optax trainers.

A trained network plugs into the Bayesian models as a mean function (``mlp(X)``), as the
feature map of deep kernel learning (``mlp.features(X)``), or as the mean of a likelihood
whose noise is inferred.
"""

from probnn.nets.mlp import ACTIVATIONS, MLP, FeatureMap, MeanFunction, mlp_forward
from probnn.nets.train import TrainConfig, TrainHistory, fit_network, squared_error, train_network

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "FeatureMap",
    "MeanFunction",
    "TrainConfig",
    "TrainHistory",
    "fit_network",
    "mlp_forward",
    "squared_error",
    "train_network",
]
