"""Prior distributions: scale priors on the last-layer variance of infinitely wide networks."""

from probnn.priors.scale import (
    SCALE_PRIORS,
    BurrXII,
    burr_xii,
    check_scale_prior,
    half_cauchy,
    inverse_gamma,
    log_normal,
)

__all__ = [
    "BurrXII",
    "SCALE_PRIORS",
    "burr_xii",
    "check_scale_prior",
    "half_cauchy",
    "inverse_gamma",
    "log_normal",
]
