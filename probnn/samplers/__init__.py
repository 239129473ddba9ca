"""Posterior samplers: NUTS/HMC and SG-MCMC through blackjax, and quadrature over a scale.

- :mod:`probnn.samplers.mcmc`: NUTS and HMC chains with window adaptation and warm starts,
  numpyro models as targets, arviz output.
- :mod:`probnn.samplers.sgmcmc`: SGLD and SGHMC on minibatches with a step-size schedule.
- :mod:`probnn.samplers.scale`: the posterior of one positive scale by quadrature or
  importance sampling, for scale mixtures of Gaussian processes.
"""

from probnn.samplers.mcmc import (
    KERNELS,
    Adaptation,
    MCMCResult,
    NumpyroTarget,
    SamplerSettings,
    check_settings,
    initial_positions,
    sample,
    summarize,
    to_inference_data,
)
from probnn.samplers.scale import (
    ScaleNodes,
    gaussian_scale_mixture,
    log_posterior_kernel,
    scale_importance_sampling,
    scale_quadrature,
)
from probnn.samplers.sgmcmc import (
    METHODS,
    SGMCMCResult,
    SGMCMCSettings,
    check_sgmcmc_settings,
    sgmcmc_sample,
    step_size_schedule,
)

__all__ = [
    "KERNELS",
    "METHODS",
    "Adaptation",
    "MCMCResult",
    "NumpyroTarget",
    "SGMCMCResult",
    "SGMCMCSettings",
    "SamplerSettings",
    "ScaleNodes",
    "check_settings",
    "check_sgmcmc_settings",
    "gaussian_scale_mixture",
    "initial_positions",
    "log_posterior_kernel",
    "sample",
    "scale_importance_sampling",
    "scale_quadrature",
    "sgmcmc_sample",
    "step_size_schedule",
    "summarize",
    "to_inference_data",
]
