"""Tests of the sampled BNN surrogates (NUTS/HMC and SG-MCMC) on a 1-d sine and in the BO loop.

The unit tests use a small network (one hidden layer of 16 tanh units) and short chains, so
each surrogate compiles and samples in seconds. The registry's full-size surrogate runs in
the slow BO test.
"""

import time

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from probnn.bnn.hmc import HMCNetwork, SampledNetworkPosterior, SGMCMCNetwork
from probnn.bnn.models import NetworkPrior
from probnn.bo import BayesianOptimization, get_problem
from probnn.bo import surrogates
from probnn.samplers.mcmc import SamplerSettings
from probnn.samplers.sgmcmc import SGMCMCSettings

NOISE = 0.1
NUM_TRAIN = 30
SMALL_PRIOR = NetworkPrior(widths=(16,))
SMALL_NUTS = SamplerSettings(num_warmup=200, num_samples=200, max_num_doublings=6)
SMALL_SGHMC = SGMCMCSettings(num_steps=2000, num_burnin=1000, thinning=10)


def sine_data(num_points: int, seed: int, max_points: int = 256):
    """The first ``num_points`` of a fixed sample, so smaller data sets are subsets of larger ones."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2.0, 2.0, (max_points, 1))
    y = np.sin(X[:, 0]) + NOISE * rng.standard_normal(max_points)
    return X[:num_points], y[:num_points]


@pytest.fixture(scope="module")
def data():
    X, y = sine_data(NUM_TRAIN, seed=0)
    X_test, y_test = sine_data(200, seed=1)
    # Where there is data: a grid over the span of the training inputs.
    X_grid = np.linspace(X.min(), X.max(), 50)[:, None]
    return {"X": X, "y": y, "X_test": X_test, "y_test": y_test, "X_grid": X_grid}


@pytest.fixture(scope="module")
def hmc_posterior(data):
    model = HMCNetwork(SMALL_PRIOR, SMALL_NUTS, num_chains=4, num_warmup_warm=50, num_predictive_draws=128)
    return model.fit(data["X"], data["y"], key=jax.random.key(0))


@pytest.fixture(scope="module")
def sgmcmc_posterior(data):
    model = SGMCMCNetwork(SMALL_PRIOR, SMALL_SGHMC, num_chains=4, num_predictive_draws=128)
    return model.fit(data["X"], data["y"], key=jax.random.key(0))


def constant_gaussian_nll(y_train, y_test) -> float:
    """Mean test NLL of N(mean(y_train), var(y_train)), the baseline a model must beat."""
    baseline = dist.Normal(np.mean(y_train), np.std(y_train))
    return -float(jnp.mean(baseline.log_prob(y_test)))


@pytest.fixture(params=["hmc", "sgmcmc"])
def posterior(request, hmc_posterior, sgmcmc_posterior):
    return hmc_posterior if request.param == "hmc" else sgmcmc_posterior


def test_predictive_nll_beats_constant(posterior, data):
    predictive = posterior.predict(data["X_test"])
    assert isinstance(predictive, dist.MixtureSameFamily)
    assert predictive.batch_shape == (200,)
    nll = -float(jnp.mean(predictive.log_prob(data["y_test"])))
    baseline = constant_gaussian_nll(data["y"], data["y_test"])
    # The baseline is about 1.2 nats because of the sine's spread. A model that finds the
    # sine and a noise near 0.1 reaches about -0.8, so a required gain of 1 nat leaves room
    # for the noise estimate of a short chain.
    assert nll < baseline - 1.0, f"test NLL {nll:.3f} against the constant Gaussian's {baseline:.3f}"


def test_predictive_mean_near_truth(posterior, data):
    X_grid = data["X_grid"]
    error = np.asarray(posterior.predict(X_grid, latent=True).mean) - np.sin(X_grid[:, 0])
    # With 30 points and noise 0.1 the posterior mean must be within 0.15 RMS and 0.35
    # everywhere on the span of the data. On these data both samplers measured about 0.06
    # RMS and 0.15 at worst.
    assert np.sqrt(np.mean(error**2)) < 0.15
    assert np.max(np.abs(error)) < 0.35


def test_sample_functions_are_posterior_draws(posterior, data):
    X_grid = data["X_grid"]
    draws = posterior.sample_functions(jax.random.key(3), X_grid, 7)
    assert draws.shape == (7, X_grid.shape[0])
    assert np.all(np.isfinite(draws))
    # Each joint draw is one kept network, on the original target scale.
    kept_functions = np.asarray(posterior.function_draws(X_grid) * posterior.y_scale + posterior.y_mean)
    distances = np.abs(np.asarray(draws)[:, None, :] - kept_functions[None, :, :]).max(axis=-1)
    assert np.all(distances.min(axis=1) < 1e-9)


def test_hmc_posterior_diagnostics(hmc_posterior):
    assert hmc_posterior.num_chains == 4
    assert hmc_posterior.num_draws == 128
    assert int(hmc_posterior.divergences) < 0.05 * 4 * SMALL_NUTS.num_samples
    assert np.all(np.isfinite(np.asarray(hmc_posterior.noise)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hmc", "sgmcmc"])
def test_warm_start_second_fit(name, hmc_posterior, sgmcmc_posterior, data):
    first = hmc_posterior if name == "hmc" else sgmcmc_posterior
    assert first.model.state is not None
    X_more, y_more = sine_data(NUM_TRAIN + 1, seed=0)
    # One more point keeps the padded size (32 rows), as in a BO iteration.
    second = first.model.fit(X_more, y_more, key=jax.random.key(1), num_restarts=1)
    assert isinstance(second, SampledNetworkPosterior)
    nll = -float(jnp.mean(second.predict(data["X_test"]).log_prob(data["y_test"])))
    assert nll < constant_gaussian_nll(y_more, data["y_test"]) - 1.0
    # A warm start continues chains that are already at equilibrium, so the fit stays as
    # good as the first one (both samplers measured 0.05 to 0.07 RMS).
    X_grid = data["X_grid"]
    error = np.asarray(second.predict(X_grid, latent=True).mean) - np.sin(X_grid[:, 0])
    assert np.sqrt(np.mean(error**2)) < 0.15
    # The chains continue from the first fit's end states, so the second fit has its own.
    previous = jax.tree.leaves(first.model.state[0])
    current = jax.tree.leaves(second.model.state[0])
    assert all(a.shape == b.shape for a, b in zip(previous, current))
    assert not all(np.array_equal(a, b) for a, b in zip(previous, current))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hmc", "sgmcmc"])
def test_no_recompilation_within_bucket(name, hmc_posterior, sgmcmc_posterior):
    model = (hmc_posterior if name == "hmc" else sgmcmc_posterior).model
    X, y = sine_data(NUM_TRAIN - 8, seed=0)
    # The first warm fit at this bucket compiles; further points in the same bucket
    # (n = 22 to 24, padded to 32 rows) must reuse that program.
    model = model.fit(X, y, key=jax.random.key(0), num_restarts=1).model
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for extra in (1, 2):
            X, y = sine_data(NUM_TRAIN - 8 + extra, seed=0)
            model = model.fit(X, y, key=jax.random.key(extra), num_restarts=1).model
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []


def _run_loop(loop, problem, total):
    while loop.num_evaluations < total:
        x = loop.ask()
        loop.tell(x, problem(x))


@pytest.mark.slow
def test_bo_loop_with_small_hmc_surrogate(monkeypatch):
    # The fixed-length HMC kernel compiles about four times faster than NUTS, which keeps
    # this unit test short. The registry's NUTS surrogate runs in the slow test below.
    small = HMCNetwork(
        SMALL_PRIOR,
        SamplerSettings(kernel="hmc", num_warmup=150, num_samples=100, num_integration_steps=16),
        num_chains=2,
        num_warmup_warm=50,
        num_predictive_draws=64,
    )
    monkeypatch.setitem(surrogates.SURROGATES, "hmc", lambda dim: small)
    problem = get_problem("branin")
    loop = BayesianOptimization(problem.bounds, surrogate="hmc", num_initial=10, seed=0)
    _run_loop(loop, problem, 12)

    assert loop.num_evaluations == 12
    assert np.all(np.isfinite(loop.y))
    assert np.all((loop.X >= problem.bounds[:, 0]) & (loop.X <= problem.bounds[:, 1]))
    assert isinstance(loop.posterior, SampledNetworkPosterior)
    # The loop's second fit passes num_restarts=1, so it continued the first fit's chains.
    # The model it returns keeps the end states for the next iteration.
    positions, adaptation, dim = loop.posterior.model.state
    assert dim == 2
    assert adaptation.step_size.shape == (2,)


@pytest.mark.slow
def test_bo_loop_with_registry_hmc():
    model = surrogates.make_surrogate("hmc", 2)
    assert isinstance(model, HMCNetwork)
    assert model.settings.kernel == "nuts"
    problem = get_problem("branin")
    loop = BayesianOptimization(problem.bounds, surrogate="hmc", num_initial=10, seed=0)
    start = time.perf_counter()
    _run_loop(loop, problem, 12)
    elapsed = time.perf_counter() - start

    assert loop.num_evaluations == 12
    assert np.all(np.isfinite(loop.y))
    assert isinstance(loop.posterior, SampledNetworkPosterior)
    assert loop.posterior.num_chains == model.num_chains
    assert int(loop.posterior.divergences) < 0.05 * model.num_chains * model.settings.num_samples
    print(f"2 BO iterations with the registry's hmc surrogate: {elapsed:.1f} s")
