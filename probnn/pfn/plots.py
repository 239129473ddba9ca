"""Plots of PFN predictions beside the exact GP posterior."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from probnn.pfn.network import PriorFittedNetwork
from probnn.priors.tasks import GPHyperTaskPrior, GPTaskPrior

__all__ = ["plot_predictive_1d"]


def plot_predictive_1d(
    pfn: PriorFittedNetwork,
    prior: GPTaskPrior | GPHyperTaskPrior,
    path: str | os.PathLike,
    *,
    seed: int = 0,
    train_sizes=(3, 10, 40),
) -> None:
    """Draw one 1-d dataset per training-set size with the PFN's and the exact GP's 90% bands.

    For a prior with several features only datasets that use one feature are drawn.
    Sizes above the PFN's ``max_train_points`` are lowered to it. For a prior with
    ``latent_targets`` the exact bands are those of the noise-free function.
    """
    limit = pfn.config.max_train_points
    train_sizes = sorted({min(int(size), limit) for size in train_sizes})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with jax.enable_x64(False):
        grid = np.linspace(0.0, 1.0, 200)
        fig, axes = plt.subplots(1, len(train_sizes), figsize=(4.2 * len(train_sizes), 3.4), sharey=True)
        axes = np.atleast_1d(axes)
        key = jax.random.key(seed)
        for ax, size in zip(axes, train_sizes):
            x, y, hyper = _one_dimensional_dataset(prior, key, size)
            key = jax.random.fold_in(key, size)
            bar = pfn.predict(x[:, None], y, grid[:, None])
            low, median, high = (np.asarray(bar.icdf(jnp.full(grid.shape, q))) for q in (0.05, 0.5, 0.95))
            mean, sd = _exact(prior, hyper, x, y, grid)

            ax.fill_between(grid, low, high, color="tab:blue", alpha=0.25, label="PFN 90%")
            ax.plot(grid, median, color="tab:blue", label="PFN median")
            ax.plot(grid, mean - 1.645 * sd, color="black", linestyle="--", linewidth=1, label="exact GP 90%")
            ax.plot(grid, mean + 1.645 * sd, color="black", linestyle="--", linewidth=1)
            ax.plot(grid, mean, color="black", linewidth=1, label="exact GP mean")
            ax.scatter(x, y, color="tab:red", zorder=3, s=14, label="training points")
            ax.set_title(f"{size} training points")
            ax.set_xlabel("x")
        axes[0].set_ylabel("y")
        axes[0].legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def _one_dimensional_dataset(prior, key, size):
    for attempt in range(200):
        draw_key = jax.random.fold_in(key, attempt)
        hyper = prior.sample_hyperparameters(draw_key, 1)
        if int(hyper.num_features[0]) == 1:
            batch = prior.sample(draw_key, 1, size)
            return np.asarray(batch.x[0, :, 0]), np.asarray(batch.y[0]), hyper
    raise ValueError("The prior drew no one-feature dataset in 200 tries; plot_predictive_1d needs 1-d datasets.")


def _exact(prior, hyper, x, y, grid):
    with jax.enable_x64(True):
        lengthscale = jnp.asarray(hyper.lengthscale[0, :1], jnp.float64)
        outputscale = jnp.asarray(hyper.outputscale[0], jnp.float64)
        noise = float(hyper.noise_variance[0])
        X = jnp.asarray(x, jnp.float64)[:, None]
        G = jnp.asarray(grid, jnp.float64)[:, None]
        K = prior.gram(X, lengthscale, outputscale) + noise * jnp.eye(X.shape[0])
        cross = _cross(prior, G, X, lengthscale, outputscale)
        factor = jnp.linalg.cholesky(K)
        alpha = jax.scipy.linalg.cho_solve((factor, True), jnp.asarray(y, jnp.float64))
        v = jax.scipy.linalg.solve_triangular(factor, cross.T, lower=True)
        mean = cross @ alpha
        predicted_noise = 0.0 if getattr(prior, "latent_targets", False) else noise
        variance = outputscale + predicted_noise - jnp.sum(v**2, axis=0)
        return np.asarray(mean), np.sqrt(np.maximum(np.asarray(variance), 0.0))


def _cross(prior, A, B, lengthscale, outputscale):
    joint = jnp.concatenate([A, B])
    return prior.gram(joint, lengthscale, outputscale)[: A.shape[0], A.shape[0]:]
