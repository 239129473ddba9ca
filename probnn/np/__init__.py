"""Neural processes: conditional (CNP), attentive (CANP) and martingale posterior (MPNP).

A neural process is trained on many regression tasks drawn from a task family
(:mod:`probnn.priors.np_tasks`) and then predicts at target inputs given a context set in
one forward pass.

References: M. Garnelo et al., "Conditional Neural Processes", ICML 2018; H. Kim et al.,
"Attentive Neural Processes", ICLR 2019; H. Lee, E. Yun, G. Nam, E. Fong and J. Lee,
"Martingale Posterior Neural Processes", ICLR 2023.
"""

from probnn.np.compare import compare_np, comparison_table
from probnn.np.evaluate import evaluate_np
from probnn.np.losses import np_loss
from probnn.np.models import CANP, CNP, MODEL_NAMES, MPNP, NPConfig, PseudoContextGenerator, build_model
from probnn.np.network import SHIPPED_NP_CHECKPOINTS, NeuralProcessNetwork, load_np, save_np
from probnn.np.plots import plot_np_predictions
from probnn.np.surrogate import NPModel, NPPosterior
from probnn.np.train import NPTrainSettings, train_np

__all__ = [
    "CANP",
    "CNP",
    "MODEL_NAMES",
    "MPNP",
    "NPConfig",
    "NPModel",
    "NPPosterior",
    "NPTrainSettings",
    "NeuralProcessNetwork",
    "PseudoContextGenerator",
    "SHIPPED_NP_CHECKPOINTS",
    "build_model",
    "compare_np",
    "comparison_table",
    "evaluate_np",
    "load_np",
    "np_loss",
    "plot_np_predictions",
    "save_np",
    "train_np",
]
