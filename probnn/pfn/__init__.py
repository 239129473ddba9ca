"""Prior-fitted networks: transformers trained on datasets from a prior, predicting in one pass.

Reference: S. Mueller, N. Hollmann, S. Pineda Arango, J. Grabocka and F. Hutter,
"Transformers Can Do Bayesian Inference", ICLR 2022.
"""

from probnn.pfn.bar import BarDistribution, bar_borders
from probnn.pfn.model import PFNConfig, PFNTransformer
from probnn.pfn.network import SHIPPED_CHECKPOINTS, PriorFittedNetwork, load_pfn, save_pfn
from probnn.pfn.surrogate import PFNModel, PFNPosterior
from probnn.pfn.train import TrainSettings, train_pfn

__all__ = [
    "BarDistribution",
    "PFNConfig",
    "PFNModel",
    "PFNPosterior",
    "PFNTransformer",
    "PriorFittedNetwork",
    "SHIPPED_CHECKPOINTS",
    "TrainSettings",
    "bar_borders",
    "load_pfn",
    "save_pfn",
    "train_pfn",
]
