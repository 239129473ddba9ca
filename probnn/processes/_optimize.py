"""Multi-start L-BFGS on unconstrained hyperparameters, run as one compiled program."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
import optax.tree


def to_unconstrained(value, lower):
    """Map a value above ``lower`` to the real line by ``u = log(value - lower)``.

    A ``lower`` of ``-inf`` marks an unbounded value, which is used as it is.
    """
    if lower == -jnp.inf:
        return value
    return jnp.log(value - lower)


def to_constrained(u, lower):
    """Inverse of :func:`to_unconstrained`: ``value = lower + exp(u)``, or ``u`` when unbounded."""
    if lower == -jnp.inf:
        return u
    # Clipping u keeps exp finite when a line search tries a huge step.
    return lower + jnp.exp(jnp.clip(u, -40.0, 40.0))


def minimize_lbfgs(
    loss: Callable, u0, *, max_iterations: int, tolerance: float = 1e-5
):
    """Minimise ``loss(u)`` from ``u0`` with optax's L-BFGS and a zoom line search.

    Iterates until the gradient norm falls below ``tolerance`` or ``max_iterations``
    steps have run. Non-finite losses are left to the line search, which shrinks
    the step until it finds a finite value. Returns the final parameters and loss.
    """
    optimizer = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry):
        u, state = carry
        value, grad = value_and_grad(u, state=state)
        updates, state = optimizer.update(grad, state, u, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(u, updates), state

    def keep_going(carry):
        _, state = carry
        count = optax.tree.get(state, "count")
        grad = optax.tree.get(state, "grad")
        grad_norm = optax.tree.norm(grad)
        return (count == 0) | ((count < max_iterations) & (grad_norm >= tolerance) & jnp.isfinite(grad_norm))

    u, _ = jax.lax.while_loop(keep_going, step, (u0, optimizer.init(u0)))
    return u, loss(u)


def minimize_restarts(loss: Callable, u0_batch, *, max_iterations: int, tolerance: float = 1e-5):
    """Run :func:`minimize_lbfgs` from each start in ``u0_batch`` (leading axis), one after another.

    Returns the parameters with the lowest finite loss, that loss, and all final losses
    (non-finite ones replaced by ``+inf``).
    """
    # lax.map rather than vmap: under vmap every Cholesky factorisation becomes a batched
    # LAPACK call, which jaxlib 0.10.2 spreads over its CPU thread pool. Inside the L-BFGS
    # while_loop that pool can wait on itself forever (seen with 192 points and 4 starts:
    # all threads parked in jax::ParallelBatchMap). Sequential starts avoid batched calls.
    run = lambda u0: minimize_lbfgs(loss, u0, max_iterations=max_iterations, tolerance=tolerance)
    u_final, losses = jax.lax.map(run, u0_batch)
    losses = jnp.where(jnp.isfinite(losses), losses, jnp.inf)
    best = jnp.argmin(losses)
    u_best = jax.tree.map(lambda leaf: leaf[best], u_final)
    return u_best, losses[best], losses
