"""Tests of SGLD and SGHMC against the closed-form posterior of Bayesian linear regression.

Model: beta ~ N(0, tau^2 I), y | beta ~ N(X beta, sigma^2 I), posterior N(m, S) with
S = (X^T X / sigma^2 + I / tau^2)^{-1} and m = S X^T y / sigma^2. The samplers see minibatches
of ``BATCH_SIZE`` rows drawn with replacement, with the likelihood scaled by n / batch.

The gradient of this log density is affine in beta, so the minibatch noise has mean zero
and both samplers keep the exact posterior mean at stationarity. The finite step size and
the minibatch noise inflate their variances. The SGLD inflation is derived in closed form
below, and the SGHMC inflation is measured (see the SGHMC test).
"""

import math

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

from probnn.samplers.mcmc import NumpyroTarget
from probnn.samplers.sgmcmc import SGMCMCSettings, check_sgmcmc_settings, sgmcmc_sample, step_size_schedule

NOISE = 1.0
PRIOR_SCALE = 1.0
NUM_ROWS = 64
BATCH_SIZE = 16
NUM_CHAINS = 4

#: Two-sided normal quantile for a per-coordinate failure rate of 1e-4, so a test with 3
#: mean and 3 variance checks fails with probability about 6e-4 for a correct sampler.
#: Over 40 seeds of the SGLD setup and 60 of the SGHMC setup the largest |z| of a mean was 2.7.
Z_CRITICAL = float(stats.norm.ppf(1.0 - 1e-4 / 2.0))

#: Below this ESS the z-scores are not trusted. The runs here reach 350 to 750.
MIN_ESS = 150.0

SGLD_SETTINGS = SGMCMCSettings(
    method="sgld", num_steps=8000, num_burnin=1600, thinning=5, batch_size=BATCH_SIZE,
    step_size=2e-3, final_step_size=1e-3,
)
SGHMC_SETTINGS = SGMCMCSettings(
    method="sghmc", num_steps=8000, num_burnin=1600, thinning=2, batch_size=BATCH_SIZE,
    step_size=2e-2, final_step_size=1e-2, num_integration_steps=5, friction=5.0,
)


def linear_regression(X, y, likelihood_scale=1.0):
    beta = numpyro.sample("beta", dist.Normal(0.0, PRIOR_SCALE).expand((X.shape[1],)).to_event(1))
    with numpyro.handlers.scale(scale=likelihood_scale):
        numpyro.sample("y", dist.Normal(X @ beta, NOISE).to_event(1), obs=y)


def minibatch_logdensity(position, minibatch):
    X, y = minibatch
    return NumpyroTarget(linear_regression, (X, y, NUM_ROWS / BATCH_SIZE), {}).logdensity(position)


def _run(key, X, y, mask, positions, settings):
    return sgmcmc_sample(key, minibatch_logdensity, (X, y), mask, positions, settings)


# Data and mask are arguments, so each settings value compiles once for the module.
run_sgmcmc = jax.jit(_run, static_argnames="settings")


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(NUM_ROWS, 3))
    X[:, 1] += 0.8 * X[:, 0]
    y = X @ np.array([1.0, -0.5, 0.3]) + NOISE * rng.normal(size=NUM_ROWS)
    precision = X.T @ X / NOISE**2 + np.eye(3) / PRIOR_SCALE**2
    covariance = np.linalg.inv(precision)
    mean = covariance @ X.T @ y / NOISE**2
    return {"X": X, "y": y, "precision": precision, "mean": mean, "covariance": covariance}


def starts():
    return {"beta": jnp.zeros((NUM_CHAINS, 3))}


def sgld_stationary_covariance(problem, step_size: float) -> np.ndarray:
    r"""Stationary covariance of SGLD with a fixed step size on the linear model.

    With ``delta = beta - m``, ``P`` the posterior precision and ``eps`` the step size,
    one SGLD step is ``delta' = (I - eps P) delta + eps zeta + sqrt(2 eps) xi``. The
    minibatch noise ``zeta`` has mean zero and covariance ``(n^2 / b) Cov_i[g_i]`` over a
    uniformly drawn row ``i``, where ``g_i = v_i - C_i delta``, ``C_i = x_i x_i^T / sigma^2``
    and ``v_i = x_i (y_i - x_i^T m) / sigma^2``. Averaging over ``delta ~ (0, Sigma)``, the
    stationary covariance solves the linear equation

    .. math::

        \Sigma = A \Sigma A^T + \epsilon^2 \frac{n^2}{b} \Big(\overline{v v^T} - \bar v \bar v^T
        + \overline{C \Sigma C} - \bar C \Sigma \bar C\Big) + 2 \epsilon I,
        \qquad A = I - \epsilon P,

    solved here on the row-major vectorisation, where ``vec(A Sigma B^T) = (A kron B) vec(Sigma)``.
    """
    X, y, mean = problem["X"], problem["y"], problem["mean"]
    n, d = X.shape
    A = np.eye(d) - step_size * problem["precision"]
    C = X[:, :, None] * X[:, None, :] / NOISE**2
    v = X * (y - X @ mean)[:, None] / NOISE**2
    v_bar, C_bar = v.mean(axis=0), C.mean(axis=0)
    noise_scale = step_size**2 * n**2 / BATCH_SIZE

    operator = (
        np.eye(d * d)
        - np.kron(A, A)
        - noise_scale * (np.mean([np.kron(Ci, Ci) for Ci in C], axis=0) - np.kron(C_bar, C_bar))
    )
    constant = noise_scale * (v.T @ v / n - np.outer(v_bar, v_bar)) + 2.0 * step_size * np.eye(d)
    return np.linalg.solve(operator, constant.reshape(-1)).reshape(d, d)


def mean_z_scores(draws, mean):
    mcse = az.mcse(az.convert_to_dataset({"beta": draws}), method="mean")["beta"].values
    return (draws.mean(axis=(0, 1)) - mean) / mcse


def variance_and_ess(draws, mean):
    """Mean of ``(beta_i - m_i)^2`` over all draws and arviz's ESS of that mean."""
    squared = (draws - mean) ** 2
    ess = az.ess(az.convert_to_dataset({"squared": squared}), method="mean")["squared"].values
    return squared.mean(axis=(0, 1)), ess


def test_sgld_matches_closed_form(problem):
    mask = jnp.ones(NUM_ROWS, bool)
    result = run_sgmcmc(jax.random.key(0), problem["X"], problem["y"], mask, starts(), SGLD_SETTINGS)
    draws = np.asarray(result.positions["beta"])
    assert draws.shape == (NUM_CHAINS, 1280, 3)

    exact_variance = np.diag(problem["covariance"])
    sgld_variance = np.diag(sgld_stationary_covariance(problem, SGLD_SETTINGS.final_step_size))
    # At these settings SGLD's stationary variance exceeds the posterior's by 11% to 15%
    # per coordinate (40 seeds measured +10% to +15% on average).
    inflation = sgld_variance / exact_variance - 1.0
    assert np.all((inflation > 0.05) & (inflation < 0.2)), inflation

    z_mean = mean_z_scores(draws, problem["mean"])
    variance, ess = variance_and_ess(draws, problem["mean"])
    for i in range(3):
        assert ess[i] > MIN_ESS, f"beta[{i}]: ESS {ess[i]:.0f}"
        assert abs(z_mean[i]) < Z_CRITICAL, f"beta[{i}]: mean z-score {z_mean[i]:.2f}"
        # The spread of a variance estimate from ESS effective draws is sqrt(2 / ESS) relative.
        tolerance = Z_CRITICAL * math.sqrt(2.0 / ess[i])
        relative_error = variance[i] / sgld_variance[i] - 1.0
        assert abs(relative_error) < tolerance, f"beta[{i}]: {relative_error:+.1%} from SGLD's stationary variance"


def test_sghmc_matches_closed_form(problem):
    mask = jnp.ones(NUM_ROWS, bool)
    result = run_sgmcmc(jax.random.key(1), problem["X"], problem["y"], mask, starts(), SGHMC_SETTINGS)
    draws = np.asarray(result.positions["beta"])
    assert draws.shape == (NUM_CHAINS, 3200, 3)

    z_mean = mean_z_scores(draws, problem["mean"])
    variance, ess = variance_and_ess(draws, problem["mean"])
    ratio = variance / np.diag(problem["covariance"])
    for i in range(3):
        assert ess[i] > MIN_ESS, f"beta[{i}]: ESS {ess[i]:.0f}"
        assert abs(z_mean[i]) < Z_CRITICAL, f"beta[{i}]: mean z-score {z_mean[i]:.2f}"
        # blackjax's SGHMC integrates with explicit Euler steps and reuses one minibatch for
        # the 5 steps of a transition. With full-data gradients, a covariance recursion
        # predicts +22% variance at step size 0.01 and friction 5, and 20 seeds measured +21%.
        # With minibatches, 60 seeds measured +30% to +35% on average and +19% to +51% per
        # run. The check allows 0% to +70%.
        assert 1.0 < ratio[i] < 1.7, f"beta[{i}]: variance ratio {ratio[i]:.3f}"


def test_nonfinite_steps_rejected(problem):
    # Row 0 has y = inf, so a minibatch that contains it gives an infinite gradient and a
    # non-finite proposal, which must be rejected (the chain stays where it is).
    y = np.asarray(problem["y"]).copy()
    y[0] = np.inf
    settings = SGLD_SETTINGS._replace(num_steps=2000, num_burnin=0, thinning=1)
    probability_with_row = 1.0 - (1.0 - 1.0 / NUM_ROWS) ** BATCH_SIZE

    for row_drawn in (True, False):
        mask = jnp.ones(NUM_ROWS, bool).at[0].set(row_drawn)
        result = run_sgmcmc(jax.random.key(2), problem["X"], jnp.asarray(y), mask, starts(), settings)
        draws = np.asarray(result.positions["beta"])
        assert np.all(np.isfinite(draws))
        assert np.all(np.isfinite(np.asarray(result.final_positions["beta"])))
        # With thinning 1, a rejected step repeats the previous draw exactly.
        repeated = np.mean(np.all(draws[:, 1:] == draws[:, :-1], axis=-1))
        if row_drawn:
            # 4 x 1999 steps: the binomial standard deviation of the fraction is 0.005.
            assert repeated == pytest.approx(probability_with_row, abs=0.03)
        else:
            # A masked row is never drawn, so no step is rejected, and the kept draws are
            # scored on minibatches without it.
            assert repeated == 0.0
            assert np.all(np.isfinite(np.asarray(result.logdensity)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "sgnht"),
        ("num_steps", 0),
        ("num_burnin", 8000),
        ("num_burnin", -1),
        ("thinning", 0),
        ("batch_size", 0),
        ("num_integration_steps", 1.5),
        ("step_size", 0.0),
        ("final_step_size", math.nan),
        ("friction", math.inf),
    ],
)
def test_invalid_settings_raise(problem, field, value):
    settings = SGLD_SETTINGS._replace(**{field: value})
    with pytest.raises(ValueError, match=field):
        check_sgmcmc_settings(settings)
    with pytest.raises(ValueError, match=field):
        sgmcmc_sample(
            jax.random.key(0), minibatch_logdensity, (problem["X"], problem["y"]), jnp.ones(NUM_ROWS, bool), starts(), settings
        )


def test_step_size_schedule_decays_then_holds():
    schedule = step_size_schedule(SGHMC_SETTINGS)
    burnin = SGHMC_SETTINGS.num_burnin
    assert float(schedule(0)) == pytest.approx(SGHMC_SETTINGS.step_size)
    # Half-way through the cosine the step size is the midpoint of the two values.
    assert float(schedule(burnin // 2)) == pytest.approx(0.5 * (SGHMC_SETTINGS.step_size + SGHMC_SETTINGS.final_step_size))
    for t in (burnin, burnin + 1, SGHMC_SETTINGS.num_steps - 1):
        assert float(schedule(t)) == pytest.approx(SGHMC_SETTINGS.final_step_size)
    steps = np.asarray([schedule(t) for t in range(burnin + 1)])
    assert np.all(np.diff(steps) <= 0.0)
