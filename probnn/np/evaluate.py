r"""Held-out log-likelihoods of a trained neural process on a task family.

For each task the model conditions on the context and predicts at every point. The
context log-likelihood averages :math:`\log q(y_i \mid x_i, C)` over the context points,
and the target log-likelihood averages it over the target points. For an MPNP the predictive is the
mixture over the ``K`` pseudo context sets, so the per-point log density is
:math:`\log \frac1K \sum_k \mathcal{N}(y_i \mid \mu_k(x_i), \sigma_k^2(x_i))`. The report
gives the mean over tasks and its standard error, the standard deviation over tasks
divided by :math:`\sqrt{n_\text{tasks}}`.
"""

from __future__ import annotations

import math
import os

import equinox as eqx
import jax
import numpy as np
from jax.scipy.special import logsumexp

from probnn.np.models import MPNP, gaussian_log_prob
from probnn.np.network import NeuralProcessNetwork, load_np
from probnn.priors.np_tasks import NP_TASKS, NPTask, make_np_task

__all__ = ["evaluate_np", "mean_and_se", "per_task_log_likelihoods", "point_log_likelihoods"]


def point_log_likelihoods(network: NeuralProcessNetwork, batch, key) -> jax.Array:
    """Predictive log density ``(B, L)`` of every point of a padded batch given its context."""
    return _point_log_likelihoods(network, batch, key)


@eqx.filter_jit
def _point_log_likelihoods(network, batch, key):
    model = network.model
    if isinstance(model, MPNP):
        keys = jax.random.split(key, batch.y.shape[0])

        def one(k, x, y, mask):
            means, sds = model(x, y, mask, x, key=k)
            return logsumexp(gaussian_log_prob(y, means, sds), axis=0) - math.log(means.shape[0])

        return jax.vmap(one)(keys, batch.x, batch.y, batch.context_mask)
    mean, sd = jax.vmap(model)(batch.x, batch.y, batch.context_mask, batch.x)
    return gaussian_log_prob(batch.y, mean, sd)


def _check_arguments(network, task, num_tasks, batch_size):
    if not isinstance(network, NeuralProcessNetwork):
        network = load_np(network)
    if isinstance(task, str):
        task = make_np_task(task)
    elif not isinstance(task, NPTask):
        raise ValueError(f"task must be a task name ({', '.join(NP_TASKS)}) or an NPTask, got {type(task).__name__}.")
    for name, value in (("num_tasks", num_tasks), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return network, task


def per_task_log_likelihoods(
    network: NeuralProcessNetwork | str | os.PathLike,
    task: str | NPTask,
    num_tasks: int = 1000,
    seed: int = 0,
    batch_size: int = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """Context and target log-likelihood per point of each task, arrays ``(num_tasks,)``.

    The tasks depend on ``task``, ``num_tasks``, ``seed`` and ``batch_size`` only, so two
    networks evaluated with the same arguments see the same tasks and their results can be
    compared task by task. A task without context (or target) points gets NaN there.
    """
    network, task = _check_arguments(network, task, num_tasks, batch_size)
    context, target = [], []
    key = jax.random.key(seed)
    with jax.enable_x64(False):
        for start in range(0, num_tasks, batch_size):
            key_data, key_model = jax.random.split(jax.random.fold_in(key, start))
            batch = task.sample(key_data, batch_size)
            log_density = np.asarray(point_log_likelihoods(network, batch, key_model), dtype=float)
            take = min(batch_size, num_tasks - start)
            for mask, out in ((batch.context_mask, context), (batch.target_mask, target)):
                mask = np.asarray(mask)[:take]
                counts = mask.sum(axis=1)
                sums = np.where(mask, log_density[:take], 0.0).sum(axis=1)
                out.append(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan))
    return np.concatenate(context), np.concatenate(target)


def mean_and_se(values) -> tuple[float, float]:
    """Mean of the finite values and its standard error (NaN when undefined)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    se = values.std(ddof=1) / math.sqrt(values.size) if values.size > 1 else float("nan")
    return float(values.mean()), float(se)


def evaluate_np(
    network: NeuralProcessNetwork | str | os.PathLike,
    task: str | NPTask,
    num_tasks: int = 1000,
    seed: int = 0,
    batch_size: int = 100,
) -> dict:
    """Mean context and target log-likelihood per point over ``num_tasks`` drawn tasks.

    Parameters
    ----------
    network : NeuralProcessNetwork, str or path
        A loaded network, or a shipped checkpoint name or a folder for :func:`load_np`.
    task : str or NPTask
        A name of :data:`probnn.priors.np_tasks.NP_TASKS` or a task family.
    num_tasks : int
        Tasks to draw; each one counts once in the mean.
    seed : int
        Seed of the tasks and of the MPNP pseudo contexts.
    batch_size : int
        Tasks per jitted call.

    Returns
    -------
    dict
        ``context_ll``, ``context_ll_se``, ``target_ll``, ``target_ll_se`` (per point,
        averaged within each task, then over tasks) and ``num_tasks``. Tasks without
        context points count in the target mean only.
    """
    context, target = per_task_log_likelihoods(network, task, num_tasks, seed, batch_size)
    context_ll, context_se = mean_and_se(context)
    target_ll, target_se = mean_and_se(target)
    return {
        "context_ll": context_ll,
        "context_ll_se": context_se,
        "target_ll": target_ll,
        "target_ll_se": target_se,
        "num_tasks": num_tasks,
    }
