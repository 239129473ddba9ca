"""NUTS and HMC through blackjax, with several chains, warm starts and arviz output.

The samplers are pure functions of a key, a log density and chain-stacked positions, so
callers can jit them with the data as arguments (one compilation serves every data set of
the same shape) and vmap or shard them. Log densities usually come from numpyro models
through :class:`NumpyroTarget`.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import constrain_fn, potential_energy

from probnn.sharding import shard_batch

#: Kernels accepted by :func:`sample`.
KERNELS = ("nuts", "hmc")


class SamplerSettings(NamedTuple):
    """Settings of :func:`sample`; every field is static (changing one recompiles).

    Parameters
    ----------
    kernel : str
        ``nuts`` (default) or ``hmc`` (fixed trajectory length).
    num_warmup : int
        Steps of Stan's window adaptation (step size and diagonal mass matrix).
    num_samples : int
        Draws kept per chain after warm-up.
    max_num_doublings : int
        Maximum tree depth of NUTS: at most ``2**max_num_doublings - 1`` leapfrog steps
        per draw.
    num_integration_steps : int
        Leapfrog steps per HMC draw (``kernel="hmc"`` only).
    target_acceptance_rate : float
    thinning : int
        Keep every ``thinning``-th draw.
    """

    kernel: str = "nuts"
    num_warmup: int = 500
    num_samples: int = 500
    max_num_doublings: int = 10
    num_integration_steps: int = 32
    target_acceptance_rate: float = 0.8
    thinning: int = 1


def check_settings(settings: SamplerSettings) -> SamplerSettings:
    """Return ``settings`` or raise ``ValueError`` naming the bad field and its fix."""
    if settings.kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {settings.kernel!r}.")
    for name in ("num_samples", "max_num_doublings", "num_integration_steps", "thinning"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if isinstance(settings.num_warmup, bool) or not isinstance(settings.num_warmup, int) or settings.num_warmup < 0:
        raise ValueError(f"num_warmup must be a non-negative integer, got {settings.num_warmup!r}.")
    if not 0.0 < settings.target_acceptance_rate < 1.0:
        raise ValueError(f"target_acceptance_rate must lie in (0, 1), got {settings.target_acceptance_rate!r}.")
    return settings


class Adaptation(NamedTuple):
    """Per-chain step size ``(chains,)`` and diagonal inverse mass matrix ``(chains, dim)``."""

    step_size: jax.Array
    inverse_mass_matrix: jax.Array


class MCMCResult(NamedTuple):
    """Draws and diagnostics of :func:`sample`; arrays lead with ``(chain, draw)``.

    ``positions`` are in the sampler's unconstrained space. ``final_positions`` and
    ``adaptation`` start the next run warm (see :func:`sample`).
    """

    positions: object
    logdensity: jax.Array
    is_divergent: jax.Array
    num_integration_steps: jax.Array
    acceptance_rate: jax.Array
    final_positions: object
    adaptation: Adaptation

    @property
    def num_chains(self) -> int:
        return self.logdensity.shape[0]

    @property
    def num_draws(self) -> int:
        return self.logdensity.shape[1]

    @property
    def divergences(self) -> jax.Array:
        """Number of divergent transitions per chain (non-finite energies included)."""
        return jnp.sum(self.is_divergent, axis=1)


def _algorithm(settings: SamplerSettings, logdensity_fn, step_size, inverse_mass_matrix):
    if settings.kernel == "nuts":
        return blackjax.nuts(
            logdensity_fn, step_size, inverse_mass_matrix, max_num_doublings=settings.max_num_doublings
        )
    return blackjax.hmc(
        logdensity_fn, step_size, inverse_mass_matrix, num_integration_steps=settings.num_integration_steps
    )


#: Shortest warm-up that holds Stan's windows (75 + 25 + 50 steps) at full size. blackjax
#: 1.7 shrinks the final step-size window of a shorter warm-up to 10% of its steps, so a
#: 50-step warm start ends on 5 steps of dual averaging, whose step size can be several
#: times too large. On a 16-unit BNN, 2% to 35% of the following transitions diverged.
#: Shorter warm starts therefore adapt the step size only and keep the previous mass matrix.
MIN_WINDOWED_WARMUP = 150


def _step_size_only_schedule(num_steps: int) -> jax.Array:
    """blackjax schedule rows ``(stage, is_window_end)``: stage 0 adapts the step size alone."""
    return jnp.zeros((num_steps, 2), dtype=jnp.int32)


def _warmup(key, logdensity_fn, position, settings: SamplerSettings, previous: Adaptation | None):
    algorithm = blackjax.nuts if settings.kernel == "nuts" else blackjax.hmc
    extra = (
        {"max_num_doublings": settings.max_num_doublings}
        if settings.kernel == "nuts"
        else {"num_integration_steps": settings.num_integration_steps}
    )
    kwargs = {}
    if previous is not None:
        kwargs = {
            "initial_step_size": previous.step_size,
            "initial_inverse_mass_matrix": previous.inverse_mass_matrix,
        }
        if settings.num_warmup < MIN_WINDOWED_WARMUP:
            kwargs["schedule_fn"] = _step_size_only_schedule
    warmup = blackjax.window_adaptation(
        algorithm,
        logdensity_fn,
        target_acceptance_rate=settings.target_acceptance_rate,
        **kwargs,
        **extra,
    )
    (state, parameters), _ = warmup.run(key, position, num_steps=settings.num_warmup)
    return state, Adaptation(parameters["step_size"], parameters["inverse_mass_matrix"])


def _one_chain(key, logdensity_fn, position, settings: SamplerSettings, previous: Adaptation | None):
    warmup_key, sample_key = jax.random.split(key)
    if settings.num_warmup > 0:
        state, adaptation = _warmup(warmup_key, logdensity_fn, position, settings, previous)
    else:
        if previous is None:
            raise ValueError("num_warmup=0 needs the step size and mass matrix of a previous run (adaptation=...).")
        adaptation = previous
        state = None
    algorithm = _algorithm(settings, logdensity_fn, adaptation.step_size, adaptation.inverse_mass_matrix)
    if state is None:
        state = algorithm.init(position)

    def thinned_step(state, key):
        def one(state, key):
            state, info = algorithm.step(key, state)
            return state, info

        state, infos = jax.lax.scan(one, state, jax.random.split(key, settings.thinning))
        info = jax.tree.map(lambda leaf: leaf[-1], infos)
        divergent = jnp.any(infos.is_divergent)
        return state, (state.position, state.logdensity, divergent, info.num_integration_steps, info.acceptance_rate)

    state, (positions, logdensity, divergent, steps, acceptance) = jax.lax.scan(
        thinned_step, state, jax.random.split(sample_key, settings.num_samples)
    )
    return positions, logdensity, divergent, steps, acceptance, state.position, adaptation


def sample(
    key,
    logdensity_fn: Callable,
    initial_positions,
    settings: SamplerSettings = SamplerSettings(),
    adaptation: Adaptation | None = None,
    shard: bool = True,
) -> MCMCResult:
    """Run NUTS or HMC chains with blackjax, all chains in one vmapped program.

    Each chain runs Stan's window adaptation of the step size and a diagonal inverse mass
    matrix for ``settings.num_warmup`` steps, then draws ``settings.num_samples`` states.
    A transition whose energy is not finite is rejected and counted as divergent
    (blackjax treats a NaN energy difference as an infinite one), so a sampler never
    crashes on a region where the density overflows.

    Warm start: pass the ``final_positions`` and ``adaptation`` of a previous result. The
    window adaptation then starts from that step size and mass matrix, so a short
    ``num_warmup`` (tens of steps) suffices when the target moved little, as in Bayesian
    optimization where each iteration adds one observation. A warm start shorter than
    :data:`MIN_WINDOWED_WARMUP` steps adapts only the step size and keeps the mass matrix.

    Parameters
    ----------
    key : jax.random key
    logdensity_fn : callable
        ``position -> log density`` (unnormalised) on an unconstrained pytree.
    initial_positions : pytree
        One position per chain, stacked on a leading axis.
    settings : SamplerSettings
    adaptation : Adaptation, optional
        Per-chain step sizes and inverse mass matrices to start the adaptation from (or
        to use as they are when ``num_warmup=0``).
    shard : bool
        Split the chains over ``jax.devices()`` when there are several and they divide
        the number of chains (see :mod:`probnn.sharding`). Each chain's draws are the
        same either way.

    Returns
    -------
    MCMCResult

    Notes
    -----
    The function is pure and traceable: jit it with the data as an argument of the
    enclosing function so that new data of the same shape reuse the compiled program.
    """
    check_settings(settings)
    num_chains = jax.tree.leaves(initial_positions)[0].shape[0]
    keys = jax.random.split(key, num_chains)
    if shard:
        # With several devices, each runs an equal share of the chains.
        keys, initial_positions, adaptation = shard_batch((keys, initial_positions, adaptation))
    run = lambda k, p, a: _one_chain(k, logdensity_fn, p, settings, a)
    positions, logdensity, divergent, steps, acceptance, final, adapted = jax.vmap(run)(
        keys, initial_positions, adaptation
    )
    return MCMCResult(positions, logdensity, divergent, steps, acceptance, final, adapted)


# -- numpyro models ------------------------------------------------------------------


class NumpyroTarget(NamedTuple):
    """A numpyro model with fixed arguments as a target for blackjax samplers.

    ``logdensity(position)`` is minus numpyro's potential energy on unconstrained
    parameters; ``constrain(position)`` maps a position back to the model's sample sites
    (deterministic sites included).
    """

    model: Callable
    model_args: tuple
    model_kwargs: dict

    def logdensity(self, position):
        return -potential_energy(self.model, self.model_args, self.model_kwargs, position)

    def constrain(self, position):
        return constrain_fn(self.model, self.model_args, self.model_kwargs, position, return_deterministic=True)


def _site_diagnosis(model, model_args, model_kwargs, key) -> list[str]:
    """Name the sample sites whose log density is not finite under a draw from the prior."""
    from numpyro import handlers

    trace = handlers.trace(handlers.seed(model, key)).get_trace(*model_args, **model_kwargs)
    problems = []
    for name, site in trace.items():
        if site["type"] != "sample":
            continue
        value = np.asarray(site["value"])
        if not np.all(np.isfinite(value)):
            kind = "observed values" if site["is_observed"] else "values"
            problems.append(f"site {name!r} has non-finite {kind}")
            continue
        log_prob = np.asarray(site["fn"].log_prob(site["value"]))
        if not np.all(np.isfinite(log_prob)):
            problems.append(f"site {name!r} has a non-finite log density")
    return problems


def initial_positions(target: NumpyroTarget, key, num_chains: int, *, max_tries: int = 10, radius: float = 2.0):
    """Draw one valid starting position per chain for a numpyro target.

    Each chain starts uniformly in ``(-radius, radius)`` in the unconstrained space. A
    start is valid when the log density and every entry of its gradient are finite; a
    chain whose start is not valid is redrawn up to ``max_tries`` times. If some chain
    has no valid start, the error names the sites at fault: those with non-finite values
    or log densities under a prior draw, else those whose gradient is not finite.

    Returns the positions stacked on a leading chain axis.
    """
    from numpyro.infer.util import initialize_model

    if isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 1:
        raise ValueError(f"num_chains must be a positive integer, got {num_chains!r}.")
    raw_key = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    try:
        info = initialize_model(
            raw_key, target.model, model_args=target.model_args, model_kwargs=target.model_kwargs
        )
    except (RuntimeError, ValueError) as error:
        problems = _site_diagnosis(target.model, target.model_args, target.model_kwargs, raw_key)
        detail = "; ".join(problems) if problems else str(error)
        raise ValueError(
            f"The model's log density could not be evaluated at any start: {detail}. Check the "
            "data for NaN or infinite values and the priors' parameters."
        ) from None
    template = info.param_info.z
    flat, unravel = ravel_pytree(template)
    grad_fn = jax.jit(jax.value_and_grad(target.logdensity))

    positions = []
    keys = jax.random.split(key, num_chains * max_tries).reshape(num_chains, max_tries)
    bad_sites: set[str] = set()
    for chain in range(num_chains):
        for attempt in range(max_tries):
            u = jax.random.uniform(keys[chain, attempt], flat.shape, flat.dtype, -radius, radius)
            position = unravel(u)
            value, grad = grad_fn(position)
            finite_grad = {name: bool(jnp.all(jnp.isfinite(g))) for name, g in grad.items()}
            if bool(jnp.isfinite(value)) and all(finite_grad.values()):
                positions.append(position)
                break
            bad_sites.update(name for name, ok in finite_grad.items() if not ok)
        else:
            named = ", ".join(sorted(bad_sites)) or "the log density itself (all gradients finite)"
            raise ValueError(
                f"No finite starting point for chain {chain} in {max_tries} tries within "
                f"(-{radius}, {radius}) of the unconstrained space; non-finite gradients at: {named}. "
                "Rescale the data or tighten the priors of those sites."
            )
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *positions)


# -- arviz ---------------------------------------------------------------------------


def to_inference_data(result: MCMCResult, target: NumpyroTarget | None = None, *, constrain: Callable | None = None):
    """Convert draws to ``arviz.InferenceData`` with ``chain`` and ``draw`` dimensions.

    Positions are mapped to the model's sites with ``target.constrain`` (or ``constrain``)
    when given. Sample statistics carry ``diverging``, ``lp``, ``acceptance_rate`` and
    ``n_steps``, the names arviz's plots look for.
    """
    import arviz as az

    constrain = constrain or (target.constrain if target is not None else None)
    positions = result.positions
    if constrain is not None:
        positions = jax.vmap(jax.vmap(constrain))(positions)
    if not isinstance(positions, dict):
        positions = {"position": positions}
    posterior = {name: np.asarray(value) for name, value in positions.items()}
    stats = {
        "diverging": np.asarray(result.is_divergent),
        "lp": np.asarray(result.logdensity),
        "acceptance_rate": np.asarray(result.acceptance_rate),
        "n_steps": np.asarray(result.num_integration_steps),
    }
    return az.from_dict(posterior=posterior, sample_stats=stats)


def summarize(idata, var_names=None) -> dict:
    """R-hat, bulk and tail ESS per variable (worst entry) and the divergence count.

    With a single chain R-hat is undefined: it is reported as NaN with a warning.
    """
    import arviz as az

    num_chains = idata.posterior.sizes["chain"]
    if num_chains < 2:
        warnings.warn(
            "R-hat needs at least two chains; it is reported as NaN. Run more chains to check mixing.",
            RuntimeWarning,
            stacklevel=2,
        )
    names = var_names or list(idata.posterior.data_vars)
    summary = {}
    for name in names:
        values = idata.posterior[name]
        extra = [dim for dim in values.dims if dim not in ("chain", "draw")]
        flat = values.stack(entry=extra) if extra else values.expand_dims("entry", axis=-1)
        rhat = (
            math.nan
            if num_chains < 2
            else float(np.nanmax(az.rhat(flat.to_dataset(name="v"))["v"].values))
        )
        ess_bulk = float(np.nanmin(az.ess(flat.to_dataset(name="v"), method="bulk")["v"].values))
        ess_tail = float(np.nanmin(az.ess(flat.to_dataset(name="v"), method="tail")["v"].values))
        summary[name] = {"r_hat_max": rhat, "ess_bulk_min": ess_bulk, "ess_tail_min": ess_tail}
    divergences = int(np.asarray(idata.sample_stats["diverging"]).sum()) if "sample_stats" in idata.groups() else 0
    return {"variables": summary, "divergences": divergences, "chains": int(num_chains)}
