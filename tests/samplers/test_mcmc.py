"""Tests of the NUTS and HMC samplers against closed-form posteriors.

The main target is Bayesian linear regression with a Gaussian prior and known noise,

    beta ~ N(0, tau^2 I),   y | beta ~ N(X beta, sigma^2 I),

whose posterior is N(m, S) with S = (X^T X / sigma^2 + I / tau^2)^{-1} and
m = S X^T y / sigma^2. Each check is a z-score against that posterior:

- mean: (sample mean - m_i) / MCSE_i, with arviz's MCSE (from its ESS of the mean, so
  autocorrelation is accounted for);
- variance: the mean of (x_i - m_i)^2 estimates S_ii. For a Gaussian coordinate
  (x_i - m_i)^2 has variance 2 S_ii^2, so with ESS_sq effective draws of it (arviz's ESS of
  the squared deviations) the relative error of the estimate has standard deviation
  sqrt(2 / ESS_sq).

Every test uses a fixed seed, so it is deterministic. The tolerances are those a correct
sampler passes for almost every seed, with failure rates stated next to ``Z_CRITICAL``.
"""

import math
import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

from probnn.samplers.mcmc import (
    MIN_WINDOWED_WARMUP,
    NumpyroTarget,
    SamplerSettings,
    check_settings,
    initial_positions,
    sample,
    summarize,
    to_inference_data,
)

NOISE = 0.5
PRIOR_SCALE = 1.0
NUM_CHAINS = 4

#: Two-sided normal quantile for a per-coordinate failure rate of 1e-4. A closed-form test
#: makes 6 such checks (mean and variance of 3 coordinates), so a correct sampler fails
#: it with probability about 6e-4 under the normal approximation. Over 100 seeds of each
#: setup in this file (NUTS, HMC with 4 steps, warm starts with 0 and 100 warm-up steps)
#: the largest |z| seen was 3.6; arviz's ESS estimates make the tails a little heavier
#: than normal.
Z_CRITICAL = float(stats.norm.ppf(1.0 - 1e-4 / 2.0))

#: Minimum ESS (of the mean and of the squared deviations) required before the z-scores
#: are trusted. At 200 the variance tolerance is 3.89 * sqrt(2 / 200) = 39%. The runs
#: here reach about 500 (NUTS) to 900 (HMC), which gives tolerances of 18% to 25%.
MIN_ESS = 200.0

BASE_SETTINGS = SamplerSettings(num_warmup=300, num_samples=300)


def linear_regression(X, y):
    beta = numpyro.sample("beta", dist.Normal(0.0, PRIOR_SCALE).expand((X.shape[1],)).to_event(1))
    numpyro.sample("y", dist.Normal(X @ beta, NOISE).to_event(1), obs=y)


def edge_model(limit):
    """A standard normal times ``(limit - x)^0.1``: -inf at ``x = limit`` and NaN beyond."""
    x = numpyro.sample("x", dist.Normal(0.0, 1.0))
    numpyro.factor("edge", 0.1 * jnp.log(limit - x))


def _run_linear_regression(key, X, y, positions, adaptation, settings):
    target = NumpyroTarget(linear_regression, (X, y), {})
    return sample(key, target.logdensity, positions, settings, adaptation)


# The data are arguments, so each settings value compiles once for the whole module.
run_linear_regression = jax.jit(_run_linear_regression, static_argnames="settings")


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    # Correlated columns give a correlated posterior, which a diagonal mass matrix does not whiten.
    X[:, 1] += 0.8 * X[:, 0]
    y = X @ np.array([1.0, -0.5, 0.3]) + NOISE * rng.normal(size=20)
    precision = X.T @ X / NOISE**2 + np.eye(3) / PRIOR_SCALE**2
    covariance = np.linalg.inv(precision)
    mean = covariance @ X.T @ y / NOISE**2
    X, y = jnp.asarray(X), jnp.asarray(y)
    target = NumpyroTarget(linear_regression, (X, y), {})
    starts = initial_positions(target, jax.random.key(1), NUM_CHAINS)
    return {"X": X, "y": y, "target": target, "starts": starts, "mean": mean, "covariance": covariance}


@pytest.fixture(scope="module")
def nuts_result(problem):
    return run_linear_regression(jax.random.key(2), problem["X"], problem["y"], problem["starts"], None, BASE_SETTINGS)


def assert_matches_posterior(draws, mean, covariance):
    """Assert the z-scores of each coordinate's mean and variance are below ``Z_CRITICAL``."""
    draws = np.asarray(draws)
    dataset = az.convert_to_dataset({"beta": draws})
    ess_mean = az.ess(dataset, method="mean")["beta"].values
    mcse = az.mcse(dataset, method="mean")["beta"].values
    squared = (draws - mean) ** 2
    ess_squared = az.ess(az.convert_to_dataset({"squared": squared}), method="mean")["squared"].values
    variance = squared.mean(axis=(0, 1))
    exact_variance = np.diag(covariance)

    for i in range(mean.size):
        assert ess_mean[i] > MIN_ESS, f"beta[{i}]: ESS of the mean {ess_mean[i]:.0f} is too low to test"
        assert ess_squared[i] > MIN_ESS, f"beta[{i}]: ESS of the squared deviations {ess_squared[i]:.0f} is too low"
        z_mean = (draws[..., i].mean() - mean[i]) / mcse[i]
        assert abs(z_mean) < Z_CRITICAL, f"beta[{i}]: mean z-score {z_mean:.2f}"
        relative_error = variance[i] / exact_variance[i] - 1.0
        tolerance = Z_CRITICAL * math.sqrt(2.0 / ess_squared[i])
        assert abs(relative_error) < tolerance, f"beta[{i}]: variance off by {relative_error:+.1%} (tolerance {tolerance:.1%})"


def test_nuts_matches_closed_form(problem, nuts_result):
    assert nuts_result.positions["beta"].shape == (NUM_CHAINS, BASE_SETTINGS.num_samples, 3)
    assert int(jnp.sum(nuts_result.divergences)) == 0
    assert_matches_posterior(nuts_result.positions["beta"], problem["mean"], problem["covariance"])


def test_hmc_matches_closed_form(problem):
    # Short fixed trajectories: on a Gaussian target, lengths near a multiple of pi (in
    # whitened units) make HMC draws antithetic or periodic, and arviz's ESS then misstates
    # the MCSE. With 4 steps the adapted trajectory stays well below pi.
    settings = BASE_SETTINGS._replace(kernel="hmc", num_integration_steps=4)
    result = run_linear_regression(jax.random.key(3), problem["X"], problem["y"], problem["starts"], None, settings)
    assert np.all(np.asarray(result.num_integration_steps) == 4)
    assert_matches_posterior(result.positions["beta"], problem["mean"], problem["covariance"])


@pytest.mark.parametrize("num_warmup", [100, MIN_WINDOWED_WARMUP])
def test_warm_start_matches_closed_form(problem, nuts_result, num_warmup):
    # The adaptation starts from the first run's step sizes and mass matrices and the
    # chains from its final positions.
    settings = BASE_SETTINGS._replace(num_warmup=num_warmup)
    result = run_linear_regression(
        jax.random.key(4), problem["X"], problem["y"], nuts_result.final_positions, nuts_result.adaptation, settings
    )
    assert result.adaptation.step_size.shape == (NUM_CHAINS,)
    assert result.adaptation.inverse_mass_matrix.shape == (NUM_CHAINS, 3)
    mass_matrix_unchanged = np.array_equal(
        result.adaptation.inverse_mass_matrix, nuts_result.adaptation.inverse_mass_matrix
    )
    # A short warm start adapts the step size only, and a long one re-estimates the mass matrix.
    assert mass_matrix_unchanged == (num_warmup < MIN_WINDOWED_WARMUP)
    assert_matches_posterior(result.positions["beta"], problem["mean"], problem["covariance"])


def test_zero_warmup_reuses_adaptation(problem, nuts_result):
    settings = BASE_SETTINGS._replace(num_warmup=0)
    result = run_linear_regression(
        jax.random.key(5), problem["X"], problem["y"], nuts_result.final_positions, nuts_result.adaptation, settings
    )
    np.testing.assert_array_equal(result.adaptation.step_size, nuts_result.adaptation.step_size)
    np.testing.assert_array_equal(result.adaptation.inverse_mass_matrix, nuts_result.adaptation.inverse_mass_matrix)
    assert_matches_posterior(result.positions["beta"], problem["mean"], problem["covariance"])


def test_zero_warmup_without_adaptation_raises(problem):
    settings = BASE_SETTINGS._replace(num_warmup=0)
    target = problem["target"]
    with pytest.raises(ValueError, match="adaptation"):
        sample(jax.random.key(0), target.logdensity, problem["starts"], settings)
    with pytest.raises(ValueError, match="adaptation"):
        run_linear_regression(jax.random.key(0), problem["X"], problem["y"], problem["starts"], None, settings)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kernel", "mala"),
        ("num_warmup", -1),
        ("num_samples", 0),
        ("max_num_doublings", 0),
        ("num_integration_steps", 2.5),
        ("thinning", True),
        ("target_acceptance_rate", 1.0),
    ],
)
def test_invalid_settings_raise(problem, field, value):
    settings = BASE_SETTINGS._replace(**{field: value})
    with pytest.raises(ValueError, match=field):
        check_settings(settings)
    with pytest.raises(ValueError, match=field):
        sample(jax.random.key(0), problem["target"].logdensity, problem["starts"], settings)


def test_initial_positions_finite_and_stacked(problem):
    starts = problem["starts"]
    assert starts["beta"].shape == (NUM_CHAINS, 3)
    assert np.all(np.isfinite(starts["beta"]))
    # Each chain gets its own draw from (-2, 2).
    assert np.all(np.abs(starts["beta"]) < 2.0)
    assert len(np.unique(np.asarray(starts["beta"][:, 0]))) == NUM_CHAINS


def test_nan_data_error_names_site(problem):
    y = np.asarray(problem["y"]).copy()
    y[3] = np.nan
    target = NumpyroTarget(linear_regression, (problem["X"], jnp.asarray(y)), {})
    with warnings.catch_warnings():
        # numpyro warns while it searches for a valid start, but only the ValueError matters.
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="site 'y'"):
            initial_positions(target, jax.random.key(0), NUM_CHAINS)


def test_invalid_num_chains_raises(problem):
    with pytest.raises(ValueError, match="num_chains"):
        initial_positions(problem["target"], jax.random.key(0), 0)


def test_nonfinite_region_counts_divergences():
    # log(2 - x) is -inf at x = 2 and NaN (with NaN gradients) beyond, so every trajectory
    # that reaches x >= 2 must be cut and counted as divergent, never accepted.
    limit = 2.0
    target = NumpyroTarget(edge_model, (limit,), {})
    starts = initial_positions(target, jax.random.key(0), NUM_CHAINS)
    run = jax.jit(lambda key, positions: sample(key, target.logdensity, positions, BASE_SETTINGS))
    result = run(jax.random.key(1), starts)

    x = np.asarray(result.positions["x"])
    assert np.all(np.isfinite(x))
    assert np.all(x < limit)
    assert np.all(np.isfinite(np.asarray(result.logdensity)))
    assert int(jnp.sum(result.divergences)) > 0
    assert int(jnp.sum(result.divergences)) == int(jnp.sum(result.is_divergent))

    # The draws still follow p(x) proportional to exp(-x^2 / 2) (2 - x)^0.1 on x < 2.
    grid = np.linspace(-12.0, limit, 400_001)
    density = np.exp(-0.5 * grid**2) * (limit - grid) ** 0.1
    exact_mean = np.trapezoid(grid * density, grid) / np.trapezoid(density, grid)
    mcse = float(az.mcse(az.convert_to_dataset({"x": x}), method="mean")["x"])
    z_mean = (x.mean() - exact_mean) / mcse
    assert abs(z_mean) < Z_CRITICAL, f"mean z-score {z_mean:.2f}"


def test_inference_data_has_chain_and_draw(problem, nuts_result):
    idata = to_inference_data(nuts_result, problem["target"])
    beta = idata.posterior["beta"]
    assert beta.dims[:2] == ("chain", "draw")
    assert beta.shape == (NUM_CHAINS, BASE_SETTINGS.num_samples, 3)
    for name in ("diverging", "lp", "acceptance_rate", "n_steps"):
        assert idata.sample_stats[name].shape == (NUM_CHAINS, BASE_SETTINGS.num_samples)
    np.testing.assert_allclose(idata.sample_stats["lp"].values, np.asarray(nuts_result.logdensity))

    rhat = az.rhat(idata)["beta"].values
    ess = az.ess(idata)["beta"].values
    assert np.all(rhat < 1.05)
    assert np.all(ess > MIN_ESS)

    summary = summarize(idata)
    assert summary["chains"] == NUM_CHAINS
    assert summary["divergences"] == 0
    assert summary["variables"]["beta"]["r_hat_max"] == pytest.approx(float(rhat.max()))
    assert summary["variables"]["beta"]["ess_bulk_min"] == pytest.approx(float(ess.min()))


def test_single_chain_rhat_is_nan(problem, nuts_result):
    one_chain = jax.tree.map(lambda leaf: leaf[:1], nuts_result)
    idata = to_inference_data(one_chain, problem["target"])
    assert idata.posterior.sizes["chain"] == 1
    with pytest.warns(RuntimeWarning, match="R-hat"):
        summary = summarize(idata)
    assert summary["chains"] == 1
    assert math.isnan(summary["variables"]["beta"]["r_hat_max"])
    assert summary["variables"]["beta"]["ess_bulk_min"] > 50.0
