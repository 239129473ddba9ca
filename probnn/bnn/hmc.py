"""Fully stochastic BNN surrogates: NUTS/HMC and stochastic-gradient MCMC over all weights."""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array

from probnn.bnn.models import NetworkPrior, bnn_regression, noise_draws, predict_draws
from probnn.kernels.base import check_inputs
from probnn.processes._data import Standardizer, check_training_data, float_dtype, pad_training_data
from probnn.samplers.mcmc import (
    Adaptation,
    MCMCResult,
    NumpyroTarget,
    SamplerSettings,
    check_settings,
    initial_positions,
    sample,
)
from probnn.samplers.sgmcmc import SGMCMCSettings, check_sgmcmc_settings, sgmcmc_sample

#: Scale of the latent predictive components (standardised units). Each draw is one
#: function, a point mass at ``f_s(x)``; a narrow Gaussian keeps expected improvement
#: and its gradient finite where all draws agree.
LATENT_FLOOR = 1e-4


class SampledNetworkPosterior(eqx.Module):
    """Posterior of a sampled BNN: ``S`` network draws, kept thinned for prediction.

    The predictive is an equal-weight mixture over the draws of ``N(f_s(x), sigma_s^2)``
    (``latent=True``: of the function values alone), on the original target scale.
    """

    model: eqx.Module
    sites: dict
    noise: Array
    y_mean: Array
    y_scale: Array
    x_center: Array
    x_scale: Array
    divergences: Array
    num_chains: int = eqx.field(static=True)

    @property
    def num_draws(self) -> int:
        return self.noise.shape[0]

    def _check_test_inputs(self, X_new):
        if isinstance(X_new, jax.core.Tracer):
            return X_new
        X_new = check_inputs(X_new, "X_new")
        dim = self.sites["z_w0"].shape[1]
        if X_new.shape[1] != dim:
            raise ValueError(f"X_new has {X_new.shape[1]} columns but the model was fitted on {dim}.")
        return jnp.asarray(X_new, float_dtype())

    def function_draws(self, X_new) -> Array:
        """Standardised network outputs of every kept draw, shape ``(S, m)``."""
        X_new = self._check_test_inputs(X_new)
        return predict_draws(self.sites, self.model.prior, (X_new - self.x_center) / self.x_scale)

    def predict(self, X_new, latent: bool = False) -> dist.MixtureSameFamily:
        f = self.function_draws(X_new).T
        scale = jnp.full_like(f, LATENT_FLOOR) if latent else jnp.broadcast_to(self.noise, f.shape)
        components = dist.Normal(f * self.y_scale + self.y_mean, scale * self.y_scale)
        weights = jnp.full(f.shape, 1.0 / f.shape[-1], f.dtype)
        return dist.MixtureSameFamily(dist.Categorical(probs=weights), components)

    def sample_functions(self, key, X_new, num_samples: int) -> Array:
        """Joint function draws at ``X_new``: each is one posterior network, chosen at random."""
        f = self.function_draws(X_new)
        rows = jax.random.randint(key, (num_samples,), 0, f.shape[0])
        return f[rows] * self.y_scale + self.y_mean


def _prepare(X, y):
    X, y = check_training_data(X, y)
    if X.shape[0] < 1:
        raise ValueError("A BNN surrogate needs at least one training point; got X of shape (0, d).")
    standardizer = Standardizer.fit(y)
    center, scale = input_scaling(X)
    data = pad_training_data((X - center) / scale, (y - standardizer.mean) / standardizer.scale)
    return data, standardizer, (jnp.asarray(center, float_dtype()), jnp.asarray(scale, float_dtype()))


def input_scaling(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the centre and scale of each input column: the training mean and standard deviation.

    Columns with (near) zero spread keep scale 1. After scaling, first-layer weights of
    ``N(0, 1/d)`` give pre-activations of unit order. Without it, inputs confined to a
    small box (the unit cube of BO has standard deviation 0.29 per column) would make
    every prior function nearly linear there.
    """
    center = X.mean(axis=0)
    scale = X.std(axis=0)
    return center, np.where(scale > 1e-8, scale, 1.0)


def _thin(tree, count: int):
    """Keep ``count`` draws spread evenly over the flattened (chain, draw) axis."""

    def flat(leaf):
        return leaf.reshape((-1, *leaf.shape[2:]))

    tree = jax.tree.map(flat, tree)
    total = jax.tree.leaves(tree)[0].shape[0]
    rows = np.linspace(0, total - 1, min(count, total)).round().astype(int)
    return jax.tree.map(lambda leaf: leaf[rows], tree)


@eqx.filter_jit
def _nuts_program(key, X, y, mask, prior, positions, adaptation, settings):
    target = NumpyroTarget(bnn_regression, (X, y, mask, prior), {})
    return sample(key, target.logdensity, positions, settings, adaptation)


class HMCNetwork(eqx.Module):
    """A BNN whose weights and noise are sampled by NUTS (or HMC), for BO and regression.

    Targets are standardised; the prior is :class:`probnn.bnn.models.NetworkPrior`
    (standard-normal weight parameterisation, log-normal noise). Several chains run in
    one vmapped program.

    In a BO loop each fit after the first starts warm: chains continue from the previous
    final states and the window adaptation starts from the previous step size and mass
    matrix, with ``num_warmup_warm`` steps instead of ``settings.num_warmup`` (a full
    warm-up runs again every few fits, when the loop asks for restarts). One added
    observation barely moves the posterior, so this keeps the chains in equilibrium at a
    fraction of the cost. The tree depth is capped (``max_num_doublings=6``, at most 63
    leapfrog steps per draw), as the BO study of Li et al. (2024) capped trajectories at
    200 steps.

    Parameters
    ----------
    prior : NetworkPrior
    settings : SamplerSettings
        Default: NUTS, 300 warm-up steps and 200 draws per chain, tree depth at most 6.
        These keep a BO iteration at 50 points to a few seconds on one core; the
        4 x 500-draw configuration is timed in ``benchmarks/bnn_iteration.py``.
    num_chains : int
    num_warmup_warm : int
        Warm-up steps of a warm start.
    num_predictive_draws : int
        Draws kept (evenly thinned over all chains) for prediction.
    """

    prior: NetworkPrior = eqx.field(static=True)
    settings: SamplerSettings = eqx.field(static=True)
    num_chains: int = eqx.field(static=True)
    num_warmup_warm: int = eqx.field(static=True)
    num_predictive_draws: int = eqx.field(static=True)
    state: tuple | None = None

    def __init__(
        self,
        prior: NetworkPrior = NetworkPrior(),
        settings: SamplerSettings = SamplerSettings(num_warmup=300, num_samples=200, max_num_doublings=6),
        *,
        num_chains: int = 4,
        num_warmup_warm: int = 50,
        num_predictive_draws: int = 256,
        state: tuple | None = None,
    ):
        self.prior = prior.check()
        self.settings = check_settings(settings)
        for name, value in (("num_chains", num_chains), ("num_predictive_draws", num_predictive_draws), ("num_warmup_warm", num_warmup_warm)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        self.num_chains = num_chains
        self.num_warmup_warm = num_warmup_warm
        self.num_predictive_draws = num_predictive_draws
        self.state = state

    def run(self, X, y, *, key, warm: bool = True) -> tuple[MCMCResult, Standardizer, tuple]:
        """Sample the posterior given ``(X, y)``.

        Returns the raw result, the target standardiser and the input centre and scale.
        """
        data, standardizer, inputs = _prepare(X, y)
        dim = data.X.shape[1]
        target = NumpyroTarget(bnn_regression, (data.X, data.y, data.mask, self.prior), {})
        init_key, sample_key = jax.random.split(key)
        settings = self.settings
        adaptation = None
        positions = None
        if self.state is not None:
            positions, adaptation, state_dim = self.state
            if state_dim != dim:
                positions, adaptation = None, None
            elif warm:
                settings = settings._replace(num_warmup=self.num_warmup_warm)
        if positions is None:
            positions = initial_positions(target, init_key, self.num_chains)
        result = _nuts_program(sample_key, data.X, data.y, data.mask, self.prior, positions, adaptation, settings)
        return result, standardizer, inputs

    def fit(self, X, y, *, key, num_restarts: int | None = None) -> SampledNetworkPosterior:
        """Sample the posterior and return it, with the chains' end states kept for a warm start.

        ``num_restarts=1`` (a BO loop's refinement fits) uses the short warm start;
        otherwise the full warm-up runs (from the previous chain states, if any).
        """
        if key is None:
            raise ValueError("HMCNetwork.fit needs key=jax.random.key(seed).")
        result, standardizer, inputs = self.run(X, y, key=key, warm=num_restarts == 1)
        return self.posterior_from(result, standardizer, inputs)

    def inference_data(self, result: MCMCResult, X, y):
        """Convert the draws of :meth:`run` on ``(X, y)`` to ``arviz.InferenceData`` on the model's sites.

        Sites are the standard-normal weight sites ``z_w*``, ``z_b*`` and ``noise``: the
        noise standard deviation of standardised targets minus ``prior.noise_floor``.
        """
        from probnn.samplers.mcmc import to_inference_data

        data, _, _ = _prepare(X, y)
        target = NumpyroTarget(bnn_regression, (data.X, data.y, data.mask, self.prior), {})
        return to_inference_data(result, target)

    def posterior_from(self, result: MCMCResult, standardizer: Standardizer, inputs: tuple) -> SampledNetworkPosterior:
        """Build the posterior (and the warm-start state) from the output of :meth:`run`."""
        divergences = jnp.sum(result.divergences)
        total = result.num_chains * result.num_draws
        if int(divergences) > 0.05 * total:
            warnings.warn(
                f"{int(divergences)} of {total} NUTS transitions diverged; the posterior summary may be "
                "biased. Raise target_acceptance_rate (e.g. 0.95) or rescale the data.",
                RuntimeWarning,
                stacklevel=2,
            )
        dim = inputs[0].shape[0]
        model = eqx.tree_at(
            lambda m: m.state, self, (result.final_positions, result.adaptation, dim), is_leaf=lambda x: x is None
        )
        sites = _thin(result.positions, self.num_predictive_draws)
        noise = noise_draws(sites, self.prior, jax.tree.leaves(sites)[0].shape[0], float_dtype())
        return SampledNetworkPosterior(
            model=model,
            sites=sites,
            noise=noise,
            y_mean=jnp.asarray(standardizer.mean, float_dtype()),
            y_scale=jnp.asarray(standardizer.scale, float_dtype()),
            x_center=inputs[0],
            x_scale=inputs[1],
            divergences=divergences,
            num_chains=result.num_chains,
        )

    def with_input_dim(self, dim: int) -> "HMCNetwork":
        return self


@eqx.filter_jit
def _sgmcmc_program(key, X, y, mask, prior, positions, settings):
    n = jnp.sum(mask).astype(X.dtype)
    batch = settings.batch_size

    def estimator(position, minibatch):
        Xb, yb = minibatch
        target = NumpyroTarget(bnn_regression, (Xb, yb, jnp.ones(yb.shape, bool), prior, n / batch), {})
        return target.logdensity(position)

    return sgmcmc_sample(key, estimator, (X, y), mask, positions, settings)


class SGMCMCNetwork(eqx.Module):
    """A BNN sampled by SGHMC (default) or SGLD on minibatches, with several chains.

    Same model and warm starts as :class:`HMCNetwork`: later fits continue the chains
    from their previous states with ``num_steps_warm`` steps.
    """

    prior: NetworkPrior = eqx.field(static=True)
    settings: SGMCMCSettings = eqx.field(static=True)
    num_chains: int = eqx.field(static=True)
    num_steps_warm: int = eqx.field(static=True)
    num_predictive_draws: int = eqx.field(static=True)
    state: tuple | None = None

    def __init__(
        self,
        prior: NetworkPrior = NetworkPrior(),
        settings: SGMCMCSettings = SGMCMCSettings(),
        *,
        num_chains: int = 4,
        num_steps_warm: int | None = None,
        num_predictive_draws: int = 256,
        state: tuple | None = None,
    ):
        self.prior = prior.check()
        self.settings = check_sgmcmc_settings(settings)
        self.num_chains = num_chains
        self.num_steps_warm = num_steps_warm if num_steps_warm is not None else max(settings.num_steps // 2, 1)
        self.num_predictive_draws = num_predictive_draws
        self.state = state

    def fit(self, X, y, *, key, num_restarts: int | None = None) -> SampledNetworkPosterior:
        if key is None:
            raise ValueError("SGMCMCNetwork.fit needs key=jax.random.key(seed).")
        data, standardizer, inputs = _prepare(X, y)
        dim = data.X.shape[1]
        init_key, sample_key = jax.random.split(key)
        # Capped at the padded size, not at n, so the static settings stay fixed while a BO
        # loop adds points within a bucket. Rows are drawn with replacement, so a batch may
        # exceed n.
        settings = self.settings._replace(batch_size=min(self.settings.batch_size, data.X.shape[0]))
        positions = None
        if self.state is not None and self.state[1] == dim:
            positions = self.state[0]
            if num_restarts == 1:
                burn = min(settings.num_burnin, self.num_steps_warm // 2)
                # The chains are already at equilibrium, so the schedule stays at the final
                # step size. SGHMC's explicit Euler steps are stable only while step_size *
                # curvature < friction (about), and the larger initial step size broke that
                # near the posterior mode and threw the chains out.
                settings = settings._replace(
                    num_steps=self.num_steps_warm, num_burnin=burn, step_size=settings.final_step_size
                )
        if positions is None:
            target = NumpyroTarget(bnn_regression, (data.X, data.y, data.mask, self.prior), {})
            positions = initial_positions(target, init_key, self.num_chains)
        result = _sgmcmc_program(sample_key, data.X, data.y, data.mask, self.prior, positions, settings)
        model = eqx.tree_at(lambda m: m.state, self, (result.final_positions, dim), is_leaf=lambda x: x is None)
        sites = _thin(result.positions, self.num_predictive_draws)
        noise = noise_draws(sites, self.prior, jax.tree.leaves(sites)[0].shape[0], float_dtype())
        return SampledNetworkPosterior(
            model=model,
            sites=sites,
            noise=noise,
            y_mean=jnp.asarray(standardizer.mean, float_dtype()),
            y_scale=jnp.asarray(standardizer.scale, float_dtype()),
            x_center=inputs[0],
            x_scale=inputs[1],
            divergences=jnp.sum(~jnp.isfinite(result.logdensity)),
            num_chains=self.num_chains,
        )

    def with_input_dim(self, dim: int) -> "SGMCMCNetwork":
        return self
