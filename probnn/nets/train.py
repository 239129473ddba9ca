"""Training deterministic networks with optax: AdamW, cosine decay, early stopping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from probnn.processes._data import check_training_data


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train_network`.

    Parameters
    ----------
    learning_rate : float
        Peak learning rate of AdamW; it decays to 1% of this along a cosine.
    weight_decay : float
        Decoupled weight decay of AdamW.
    num_steps : int
        Maximum number of optimizer steps.
    batch_size : int or None
        Minibatch size; ``None`` trains on the full batch.
    validation_fraction : float
        Share of the data held out for early stopping; 0 trains on everything and keeps
        the last parameters.
    patience : int
        Stop after this many steps without a lower validation loss; the parameters with
        the lowest validation loss are returned.
    """

    learning_rate: float = 1e-2
    weight_decay: float = 1e-4
    num_steps: int = 2000
    batch_size: int | None = None
    validation_fraction: float = 0.0
    patience: int = 200

    def __post_init__(self):
        for name in ("learning_rate", "weight_decay"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}.")
        for name in ("num_steps", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {self.batch_size!r}.")
        if not (0.0 <= self.validation_fraction < 1.0):
            raise ValueError(f"validation_fraction must lie in [0, 1), got {self.validation_fraction!r}.")

    def optimizer(self) -> optax.GradientTransformation:
        schedule = optax.cosine_decay_schedule(self.learning_rate, self.num_steps, alpha=0.01)
        return optax.adamw(schedule, weight_decay=self.weight_decay)


class TrainHistory(NamedTuple):
    """Per-step training loss, validation loss (NaN without validation) and the stopping step."""

    train_loss: jax.Array
    validation_loss: jax.Array
    best_step: jax.Array
    num_steps: jax.Array


def squared_error(model, X, y, weights):
    """Weighted mean squared error of ``model(X)`` against ``y``."""
    residual = model(X) - y
    return jnp.sum(weights * residual**2) / jnp.maximum(jnp.sum(weights), 1.0)


def fit_network(
    model,
    X,
    y,
    train_weights,
    validation_weights,
    key,
    config: TrainConfig,
    loss: Callable = squared_error,
):
    """Train ``model`` on weighted data: the pure, jittable and vmappable core.

    ``train_weights`` and ``validation_weights`` are per-row weights (0 leaves a row out,
    so padding, bootstrap resampling and validation splits are all weights). Each step
    uses the full batch, or a minibatch of ``config.batch_size`` rows drawn uniformly
    from the rows with positive training weight. With any validation weight the loop
    stops after ``config.patience`` steps without improvement and returns the best
    parameters seen.

    Returns the trained model and a :class:`TrainHistory`.
    """
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = config.optimizer()
    has_validation = jnp.sum(validation_weights) > 0
    n = X.shape[0]

    def objective(p, Xb, yb, wb):
        return loss(eqx.combine(p, static), Xb, yb, wb)

    def validation_loss(p):
        return objective(p, X, y, validation_weights)

    def step(carry):
        p, state, best_p, best_loss, best_step, i, since, train_hist, val_hist, k = carry
        k, sub = jax.random.split(k)
        if config.batch_size is None or config.batch_size >= n:
            Xb, yb, wb = X, y, train_weights
        else:
            probs = train_weights / jnp.sum(train_weights)
            rows = jax.random.choice(sub, n, (config.batch_size,), p=probs)
            Xb, yb, wb = X[rows], y[rows], jnp.ones(config.batch_size, X.dtype)
        value, grads = jax.value_and_grad(objective)(p, Xb, yb, wb)
        updates, state = optimizer.update(grads, state, p)
        p = optax.apply_updates(p, updates)
        val = jnp.where(has_validation, validation_loss(p), value)
        better = val < best_loss
        best_p = jax.tree.map(lambda new, old: jnp.where(better, new, old), p, best_p)
        best_loss = jnp.where(better, val, best_loss)
        best_step = jnp.where(better, i, best_step)
        since = jnp.where(better, 0, since + 1)
        train_hist = train_hist.at[i].set(value)
        val_hist = val_hist.at[i].set(jnp.where(has_validation, val, jnp.nan))
        return p, state, best_p, best_loss, best_step, i + 1, since, train_hist, val_hist, k

    def keep_going(carry):
        i, since = carry[5], carry[6]
        patience_left = jnp.where(has_validation, since < config.patience, True)
        return (i < config.num_steps) & patience_left

    dtype = jax.tree.leaves(params)[0].dtype
    history = jnp.full((config.num_steps,), jnp.nan, dtype)
    init = (
        params, optimizer.init(params), params, jnp.asarray(jnp.inf, dtype), jnp.asarray(0), jnp.asarray(0),
        jnp.asarray(0), history, history, key,
    )
    p, _, best_p, _, best_step, i, _, train_hist, val_hist, _ = jax.lax.while_loop(keep_going, step, init)
    # Without validation the last parameters are kept: the training loss of a minibatch
    # is too noisy to pick a best step by.
    chosen = jax.tree.map(lambda best, last: jnp.where(has_validation, best, last), best_p, p)
    return eqx.combine(chosen, static), TrainHistory(train_hist, val_hist, best_step, i)


_fit_network_jit = eqx.filter_jit(fit_network)


def train_network(model, X, y, *, key, config: TrainConfig | None = None, loss: Callable = squared_error, **settings):
    """Train a network on ``(X, y)`` with AdamW, cosine decay and optional early stopping.

    Parameters
    ----------
    model : equinox module
        For example :class:`probnn.nets.MLP`; any module whose ``loss(model, X, y, w)`` is defined.
    X : array of shape (n, d) or (n,)
    y : array of shape (n,)
    key : jax.random key
        Draws the validation split and the minibatches.
    config : TrainConfig, optional
        Settings; keyword arguments (``learning_rate=...``, ...) override single fields.
    loss : callable
        ``loss(model, X, y, weights) -> scalar``; weighted squared error by default.

    Returns
    -------
    model, TrainHistory
    """
    X, y = check_training_data(X, y)
    config = TrainConfig(**{**(config.__dict__ if config else {}), **settings})
    n = X.shape[0]
    if n < 1:
        raise ValueError("train_network needs at least one training row; got X of shape (0, d).")
    dtype = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))[0].dtype
    split_key, train_key = jax.random.split(key)
    validation = np.zeros(n, dtype=bool)
    num_validation = int(round(config.validation_fraction * n))
    if num_validation > 0:
        if n - num_validation < 1:
            raise ValueError(f"validation_fraction={config.validation_fraction} leaves no training rows out of {n}.")
        validation[np.asarray(jax.random.permutation(split_key, n))[:num_validation]] = True
    train_w = jnp.asarray(~validation, dtype)
    val_w = jnp.asarray(validation, dtype)
    return _fit_network_jit(model, jnp.asarray(X, dtype), jnp.asarray(y, dtype), train_w, val_w, train_key, config)
