"""Posterior predictive in one forward pass: the shipped 1-d PFN beside the exact GP posterior.

The ``gp-rbf-1d`` checkpoint was trained on datasets from a GP with an RBF kernel
(lengthscale 0.2, output scale 1, noise variance 0.01). Given a few noisy points from
that prior, its bar-distribution predictive should match the exact GP posterior. Writes
``pfn_posterior.png`` to the folder given as the first argument, or to the current folder.
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from probnn.pfn import load_pfn
from probnn.pfn.plots import plot_predictive_1d
from probnn.priors import make_task_prior

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
pfn = load_pfn("gp-rbf-1d")
prior = make_task_prior("gp-rbf-1d")

# Twelve training points and 200 test points from one draw of the prior.
batch = prior.sample(jax.random.key(7), batch_size=1, num_points=212)
x, y = np.asarray(batch.x[0]), np.asarray(batch.y[0])
predictive = pfn.predict(x[:12], y[:12], x[12:])

# The exact posterior predictive with the prior's own hyperparameters.
with jax.enable_x64(True):
    X, Y = jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)
    K = prior.gram(X, jnp.full(1, 0.2), 1.0)
    factor = jnp.linalg.cholesky(K[:12, :12] + 0.01 * jnp.eye(12))
    alpha = jax.scipy.linalg.cho_solve((factor, True), Y[:12])
    v = jax.scipy.linalg.solve_triangular(factor, K[:12, 12:], lower=True)
    mean = K[12:, :12] @ alpha
    sd = jnp.sqrt(1.0 + 0.01 - jnp.sum(v**2, axis=0))
    exact_nll = float(-jnp.mean(jax.scipy.stats.norm.logpdf(Y[12:], mean, sd)))
    mean = np.asarray(mean)

pfn_nll = float(-jnp.mean(predictive.log_prob(jnp.asarray(y[12:]))))
print(f"test NLL per point: PFN {pfn_nll:.3f}, exact GP {exact_nll:.3f}")
print(f"largest gap between predictive means: {np.max(np.abs(np.asarray(predictive.mean) - mean)):.3f}")

plot_predictive_1d(pfn, prior, out / "pfn_posterior.png", seed=3)
print(f"wrote {out / 'pfn_posterior.png'}")
