"""Prior distributions: scale priors on the last-layer variance of infinitely wide networks,
and task priors that draw whole datasets for training PFNs and neural processes."""

from probnn.priors.scale import (
    SCALE_PRIORS,
    BurrXII,
    burr_xii,
    check_scale_prior,
    half_cauchy,
    inverse_gamma,
    log_normal,
)
from probnn.priors.tasks import (
    TASK_PRIORS,
    BNNTaskPrior,
    GPHyperparameters,
    GPHyperTaskPrior,
    GPTaskPrior,
    NNGPTaskPrior,
    TaskBatch,
    TaskPrior,
    make_task_prior,
)

__all__ = [
    "BNNTaskPrior",
    "GPHyperTaskPrior",
    "GPHyperparameters",
    "GPTaskPrior",
    "NNGPTaskPrior",
    "TASK_PRIORS",
    "TaskBatch",
    "TaskPrior",
    "make_task_prior",
    "BurrXII",
    "SCALE_PRIORS",
    "burr_xii",
    "check_scale_prior",
    "half_cauchy",
    "inverse_gamma",
    "log_normal",
]
