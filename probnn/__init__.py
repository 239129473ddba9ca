"""probnn: Bayesian inference with neural-network priors in JAX.

Importing probnn changes no global JAX setting. Gaussian-process algebra wants float64:
enable it with ``jax.config.update("jax_enable_x64", True)`` before creating arrays.
"""

from probnn import kernels
from probnn.processes import GaussianProcess, StudentTProcess

__version__ = "0.1.0"

__all__ = ["kernels", "GaussianProcess", "StudentTProcess", "BayesianOptimization", "get_problem", "__version__"]


def __getattr__(name):
    # The BO loop pulls in scipy's optimiser and the problem registry (scikit-learn);
    # loading them on first use keeps `import probnn` light.
    if name == "BayesianOptimization":
        from probnn.bo.loop import BayesianOptimization

        return BayesianOptimization
    if name == "get_problem":
        from probnn.bo.problems import get_problem

        return get_problem
    raise AttributeError(f"module 'probnn' has no attribute {name!r}")
