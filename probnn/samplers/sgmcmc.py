"""Stochastic-gradient MCMC (SGLD, SGHMC) through blackjax, with minibatches and a step-size schedule."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp

from probnn.sharding import shard_batch

#: Methods accepted by :func:`sgmcmc_sample`.
METHODS = ("sghmc", "sgld")


class SGMCMCSettings(NamedTuple):
    """Settings of :func:`sgmcmc_sample`; every field is static.

    Parameters
    ----------
    method : str
        ``sghmc`` (Chen et al. 2014) or ``sgld`` (Welling and Teh 2011).
    num_steps : int
        Steps per chain, burn-in included.
    num_burnin : int
        Steps discarded at the start.
    thinning : int
        Keep every ``thinning``-th step after burn-in.
    batch_size : int
        Minibatch size; capped at the number of data rows by the callers.
    step_size : float
        Initial step size ``eps_0``.
    final_step_size : float
        The step size decays along a cosine from ``step_size`` to this value over the
        burn-in and then stays there, so the kept draws share one step size.
    num_integration_steps : int
        SGHMC leapfrog steps per transition.
    friction : float
        SGHMC friction per unit of simulated time: blackjax's momentum update multiplies
        by ``1 - alpha * eps``, with ``alpha = friction``.
    """

    method: str = "sghmc"
    num_steps: int = 1000
    num_burnin: int = 500
    thinning: int = 5
    batch_size: int = 32
    step_size: float = 0.02
    final_step_size: float = 0.005
    num_integration_steps: int = 3
    friction: float = 5.0


def check_sgmcmc_settings(settings: SGMCMCSettings) -> SGMCMCSettings:
    """Return ``settings`` or raise ``ValueError`` naming the bad field."""
    if settings.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {settings.method!r}.")
    for name in ("num_steps", "thinning", "batch_size", "num_integration_steps"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if not (isinstance(settings.num_burnin, int) and 0 <= settings.num_burnin < settings.num_steps):
        raise ValueError(
            f"num_burnin must be an integer in [0, num_steps={settings.num_steps}), got {settings.num_burnin!r}."
        )
    for name in ("step_size", "final_step_size", "friction"):
        value = getattr(settings, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be finite and positive, got {value!r}.")
    return settings


def step_size_schedule(settings: SGMCMCSettings) -> Callable:
    """Step size at step ``t``: cosine decay over the burn-in, constant afterwards."""

    def schedule(t):
        progress = jnp.clip(t / max(settings.num_burnin, 1), 0.0, 1.0)
        cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
        return settings.final_step_size + (settings.step_size - settings.final_step_size) * cosine

    return schedule


class SGMCMCResult(NamedTuple):
    """Kept draws ``(chain, draw, ...)``, their minibatch log densities and the end states."""

    positions: object
    logdensity: jax.Array
    final_positions: object


def sgmcmc_sample(key, logdensity_estimator: Callable, data, mask, initial_positions, settings: SGMCMCSettings) -> SGMCMCResult:
    """Run SGLD or SGHMC chains on minibatches, all chains in one vmapped program.

    Parameters
    ----------
    key : jax.random key
    logdensity_estimator : callable
        ``(position, minibatch) -> log density estimate``, where ``minibatch`` has the
        structure of ``data`` with ``settings.batch_size`` rows; it must scale the
        likelihood by ``n / batch_size`` so the estimate is unbiased.
    data : pytree of arrays with a leading row axis
    mask : bool array
        Rows that may be drawn (padded rows are ``False``). Minibatches are drawn with
        replacement among them.
    initial_positions : pytree
        One position per chain, stacked on a leading axis.
    settings : SGMCMCSettings
    """
    check_sgmcmc_settings(settings)
    grad_estimator = jax.grad(logdensity_estimator)
    if settings.method == "sghmc":
        algorithm = blackjax.sghmc(grad_estimator, settings.num_integration_steps, alpha=settings.friction)
    else:
        algorithm = blackjax.sgld(grad_estimator)
    schedule = step_size_schedule(settings)
    probs = mask / jnp.sum(mask)
    rows_total = mask.shape[0]
    num_kept = (settings.num_steps - settings.num_burnin) // settings.thinning

    def minibatch(key):
        rows = jax.random.choice(key, rows_total, (settings.batch_size,), p=probs)
        return jax.tree.map(lambda leaf: leaf[rows], data)

    def chain(key, position):
        def step(position, inputs):
            t, key = inputs
            batch_key, step_key = jax.random.split(key)
            batch = minibatch(batch_key)
            new = algorithm.step(step_key, position, batch, schedule(t))
            # A step that produces non-finite values is rejected, so one bad minibatch
            # or an overflow never poisons the chain.
            finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(new)]))
            position = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, position)
            return position, position

        keys = jax.random.split(key, settings.num_steps)
        final, path = jax.lax.scan(step, position, (jnp.arange(settings.num_steps), keys))
        kept = jax.tree.map(lambda leaf: leaf[settings.num_burnin :][settings.thinning - 1 :: settings.thinning][:num_kept], path)
        # Every kept draw is scored on one minibatch drawn like the sampler's (only rows
        # the mask allows), so the values are unbiased estimates of the log density.
        evaluation_batch = minibatch(jax.random.fold_in(key, settings.num_steps))
        logdensity = jax.vmap(lambda p: logdensity_estimator(p, evaluation_batch))(kept)
        return kept, logdensity, final

    num_chains = jax.tree.leaves(initial_positions)[0].shape[0]
    keys = jax.random.split(key, num_chains)
    # With several devices, each runs an equal share of the chains.
    keys, initial_positions = shard_batch((keys, initial_positions))
    positions, logdensity, final = jax.vmap(chain)(keys, initial_positions)
    return SGMCMCResult(positions, logdensity, final)
