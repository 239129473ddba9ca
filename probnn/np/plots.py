"""Plots of neural process predictions on 1-d GP tasks beside the exact GP posterior."""

from __future__ import annotations

import os

import jax
import numpy as np

from probnn.np.network import NeuralProcessNetwork, load_np
from probnn.np.surrogate import NPModel
from probnn.priors.np_tasks import NP_X_RANGE, GPNPTask, make_np_task

__all__ = ["plot_np_predictions"]

#: Two-sided 95% quantile of the standard normal.
Z95 = 1.959964


def plot_np_predictions(
    networks: dict[str, NeuralProcessNetwork | str | os.PathLike],
    path: str | os.PathLike,
    *,
    task: str | GPNPTask = "rbf",
    context_sizes=(4, 10, 30),
    seed: int = 0,
) -> None:
    """Draw a grid of predictions: one row per network, one column per context size.

    Each column is one task drawn from the GP task family ``task``, conditioned on its
    first ``context_size`` points. A panel shows the context points, the network's
    predictive mean and its mean +- 1.96 sd band, and the exact GP posterior predictive of
    the task's own hyperparameters (dashed). For an MPNP it also draws the mean given each
    pseudo context set (thin lines), whose spread is the martingale posterior's
    uncertainty about the function.

    The exact posterior treats the noise as Gaussian, so for ``t-noise`` it is a
    reference, not the Bayes predictive.
    """
    if not networks:
        raise ValueError("networks is empty; pass at least one {label: checkpoint} entry.")
    if isinstance(task, str):
        task = make_np_task(task)
    if not isinstance(task, GPNPTask):
        raise ValueError(f"plot_np_predictions draws GP tasks (rbf, matern, periodic, t-noise), got {task!r}.")
    sizes = [int(size) for size in context_sizes]
    if not sizes or min(sizes) < 1 or max(sizes) > task.max_points:
        raise ValueError(f"context_sizes must lie in [1, {task.max_points}], got {context_sizes!r}.")
    models = {
        label: NPModel(network if isinstance(network, NeuralProcessNetwork) else load_np(network))
        for label, network in networks.items()
    }

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(*NP_X_RANGE, 200)
    datasets = [_draw_task(task, jax.random.fold_in(jax.random.key(seed), column), size)
                for column, size in enumerate(sizes)]
    fig, axes = plt.subplots(
        len(models), len(sizes), figsize=(4.0 * len(sizes), 2.9 * len(models)), sharex=True, squeeze=False
    )
    for row, (label, model) in enumerate(models.items()):
        for column, (x, y, exact_mean, exact_sd) in enumerate(datasets):
            ax = axes[row, column]
            posterior = model.fit(x, y, key=jax.random.key(seed + column))
            predictive = posterior.predict(grid)
            mean = np.asarray(predictive.mean)
            sd = np.sqrt(np.asarray(predictive.variance))
            if posterior.pseudo_x is not None:
                components = np.asarray(predictive.component_distribution.mean).T
                for line in components:
                    ax.plot(grid, line, color="tab:blue", linewidth=0.6, alpha=0.5)
            ax.fill_between(grid, mean - Z95 * sd, mean + Z95 * sd, color="tab:blue", alpha=0.22,
                            label=f"{label} mean +- 1.96 sd")
            ax.plot(grid, mean, color="tab:blue", linewidth=1.4, label=f"{label} mean")
            ax.plot(grid, exact_mean, color="black", linewidth=1.0, linestyle="--", label="exact GP")
            for sign in (-1, 1):
                ax.plot(grid, exact_mean + sign * Z95 * exact_sd, color="black", linewidth=0.7, linestyle=":")
            ax.scatter(x, y, color="tab:red", s=14, zorder=3, label="context")
            if row == 0:
                ax.set_title(f"{len(x)} context points")
            if column == 0:
                ax.set_ylabel(label)
            if row == len(models) - 1:
                ax.set_xlabel("x")
        axes[row, 0].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _draw_task(task: GPNPTask, key, size: int):
    """Context ``(x, y)`` of one task and the exact GP predictive mean and sd on the plot grid."""
    key_h, key_x, key_y = jax.random.split(key, 3)
    with jax.enable_x64(True):
        hyper = {name: float(value[0]) for name, value in task.sample_hyperparameters(key_h, 1).items()}
        x = np.asarray(jax.random.uniform(key_x, (size,), minval=NP_X_RANGE[0], maxval=NP_X_RANGE[1]))
        grid = np.linspace(*NP_X_RANGE, 200)
        joint = np.concatenate([x, grid])
        gram = np.asarray(task.covariance(jax.numpy.asarray(joint), hyper["lengthscale"], hyper["scale"],
                                          hyper["period"]))
    noise = task.noise_sd**2
    K = gram[:size, :size] + noise * np.eye(size)
    factor = np.linalg.cholesky(K + 1e-10 * np.eye(size))
    y = factor @ np.asarray(jax.random.normal(key_y, (size,)))
    cross = gram[size:, :size]
    alpha = np.linalg.solve(K, y)
    mean = cross @ alpha
    variance = np.diag(gram[size:, size:]) + noise - np.sum(cross * np.linalg.solve(K, cross.T).T, axis=1)
    return x, y, mean, np.sqrt(np.maximum(variance, 0.0))
