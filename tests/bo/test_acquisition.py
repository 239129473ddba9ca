"""Tests for probnn.bo.acquisition against quadrature and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import integrate, stats

from probnn.bo.acquisition import (
    ACQUISITIONS,
    expected_improvement,
    log_expected_improvement,
    log_probability_of_improvement,
    thompson_choice,
    upper_confidence_bound,
)


@pytest.fixture(autouse=True, scope="module")
def enable_x64():
    """Run this module in float64 and restore the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


# ---------------------------------------------------------------------------
# Quadrature references (float64 scipy)
# ---------------------------------------------------------------------------

QUAD_OPTIONS = dict(epsabs=0.0, epsrel=1e-13, limit=500)

# Most grids have this many points, so that the jitted kernels compile once
# for the whole module instead of once per grid size.
GRID_SIZE = 64


def gaussian_log_h_by_quadrature(z):
    """log E[max(z - Z, 0)] for Z ~ N(0, 1).

    For z < 0, substituting u = |z| + s gives
    h(z) = phi(z) * int_0^inf s exp(-|z| s - s^2 / 2) ds, a well-scaled integral.
    For z >= 0, h(z) = z + h(-z).
    """
    x = abs(z)
    integral, _ = integrate.quad(lambda s: s * np.exp(-x * s - 0.5 * s * s), 0.0, np.inf, **QUAD_OPTIONS)
    log_h_left = stats.norm.logpdf(x) + np.log(integral)
    if z >= 0:
        return np.log(z + np.exp(log_h_left))
    return log_h_left


def student_t_log_cdf_and_log_ei_by_quadrature(z, df):
    """log T(z) and log E[max(z - Z, 0)] for Z ~ t_df, by quadrature.

    For x = |z| > 0, substituting u = x / v with v in (0, 1] maps the tail
    integrals over u in [x, inf) to finite intervals, and dividing by t(x)
    keeps the integrands of order one:
    S(x) = t(x) x int_0^1 r(v) / v^2 dv and
    E[max(Z - x, 0)] = t(x) x^2 int_0^1 (1/v - 1) r(v) / v^2 dv,
    with r(v) = t(x / v) / t(x). Then T(-x) = S(x), T(x) = 1 - S(x),
    g(-x) = E[max(Z - x, 0)] and g(x) = x + g(-x).
    """
    x = abs(z)
    log_t_x = stats.t.logpdf(x, df)
    log_g_at_zero = np.log(df / (df - 1.0)) + log_t_x if df > 1 else np.nan
    if x == 0.0:
        return np.log(0.5), log_g_at_zero

    log1p_x = np.log1p(x * x / df)

    def ratio(v):
        if v == 0.0:
            return 0.0
        return np.exp(-0.5 * (df + 1.0) * (np.log1p(x * x / (df * v * v)) - log1p_x))

    # The integrands peak at v = 1 with width about 1 / rate.
    rate = (df + 1.0) * x * x / (df + x * x) + 2.0
    breakpoints = [1.0 - k / rate for k in (1, 3, 10, 30, 100) if k < rate]
    options = dict(QUAD_OPTIONS, points=breakpoints or None)
    tail_integral, _ = integrate.quad(lambda v: ratio(v) / (v * v), 0.0, 1.0, **options)
    log_upper_tail = log_t_x + np.log(x) + np.log(tail_integral)
    # EI is infinite for df <= 1, where the second integral diverges.
    log_g_left = np.nan
    if df > 1:
        ei_integral, _ = integrate.quad(lambda v: (1.0 / v - 1.0) * ratio(v) / (v * v), 0.0, 1.0, **options)
        log_g_left = log_t_x + 2.0 * np.log(x) + np.log(ei_integral)
    if z > 0:
        return np.log1p(-np.exp(log_upper_tail)), np.log(z + np.exp(log_g_left))
    return log_upper_tail, log_g_left


def standard_normal(z):
    """Normal predictive with loc = -z, scale = 1 and best = 0, so that (best - loc) / scale = z."""
    return dist.Normal(-jnp.asarray(z, jnp.float64), 1.0)


def standard_student_t(z, df):
    return dist.StudentT(df, -jnp.asarray(z, jnp.float64), 1.0)


# ---------------------------------------------------------------------------
# Gaussian expected improvement
# ---------------------------------------------------------------------------


def test_gaussian_ei_matches_quadrature_on_grid():
    mus = np.array([-3.0, -0.5, 0.0, 0.7, 4.0])
    sigmas = np.array([1e-3, 0.1, 1.0, 7.0])
    bests = np.array([-1.0, 0.0, 2.5])
    mu_grid, sigma_grid, best_grid = (g.ravel() for g in np.meshgrid(mus, sigmas, bests, indexing="ij"))
    z = (best_grid - mu_grid) / sigma_grid
    # Grid points far in the left tail underflow in linear space, so compare
    # only where EI is representable and use the log form for the tail below.
    keep = z > -30
    mu_grid, sigma_grid, best_grid = mu_grid[keep], sigma_grid[keep], best_grid[keep]

    for mu, sigma, best in zip(mu_grid, sigma_grid, best_grid):
        reference, _ = integrate.quad(
            lambda f: (best - f) * stats.norm.pdf(f, mu, sigma),
            mu - 40 * sigma,
            best,
            epsabs=0.0,
            epsrel=1e-13,
            limit=200,
            points=[mu] if mu - 40 * sigma < mu < best else None,
        )
        value = float(expected_improvement(dist.Normal(mu, sigma), best))
        assert value == pytest.approx(reference, rel=1e-10), (mu, sigma, best)


def test_gaussian_log_ei_wide_z_range():
    z = np.concatenate([-np.geomspace(1e-3, 1e3, 44), [0.0], np.geomspace(1e-3, 1e3, 19)])
    values = np.asarray(log_expected_improvement(standard_normal(z), 0.0))
    reference = np.array([gaussian_log_h_by_quadrature(zi) for zi in z])
    # Absolute error of log EI equals relative error of EI. Rounding of z^2 / 2
    # alone contributes up to eps * z^2 / 2 (1.1e-10 at |z| = 1e3).
    tolerance = 1e-12 + 2.3e-16 * z**2
    np.testing.assert_array_less(np.abs(values - reference), tolerance)


def test_gaussian_ei_matches_textbook_closed_form():
    z = np.linspace(-5.0, 20.0, GRID_SIZE)
    sigma = 2.5
    mu = 1.0
    best = mu + sigma * z
    textbook = sigma * (z * stats.norm.cdf(z) + stats.norm.pdf(z))
    values = np.asarray(expected_improvement(dist.Normal(jnp.full(z.shape, mu), sigma), jnp.asarray(best)))
    np.testing.assert_allclose(values, textbook, rtol=1e-12)


def test_gaussian_ei_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mu = np.array([0.3, -1.2, 2.0])
    sigma = np.array([1.0, 0.4, 3.0])
    best = 0.5
    samples = rng.normal(mu, sigma, size=(400_000, 3))
    improvement = np.maximum(best - samples, 0.0)
    monte_carlo = improvement.mean(axis=0)
    standard_error = improvement.std(axis=0) / np.sqrt(samples.shape[0])
    values = np.asarray(expected_improvement(dist.Normal(mu, sigma), best))
    # 5 standard errors: a false failure has probability below 1e-6 per point.
    np.testing.assert_array_less(np.abs(values - monte_carlo), 5 * standard_error)


# ---------------------------------------------------------------------------
# Student-t expected improvement
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("df", [1.5, 2.5, 5.0, 30.0])
def test_student_t_ei_matches_quadrature(df):
    moderate = np.concatenate([np.linspace(-40.0, 10.0, 50), [-1e-3, 1e-3]])
    far_tail = -np.geomspace(50.0, 1e3, GRID_SIZE - moderate.size)
    z = np.concatenate([moderate, far_tail])
    values = np.asarray(log_expected_improvement(standard_student_t(z, df), 0.0))
    reference = np.array([student_t_log_cdf_and_log_ei_by_quadrature(zi, df)[1] for zi in z])
    # |log EI - log EI_ref| is the relative error of EI.
    errors = np.abs(values - reference)
    np.testing.assert_array_less(errors[: moderate.size], 1e-8)
    np.testing.assert_array_less(errors[moderate.size :], 1e-12)


def test_student_t_ei_closed_form_at_moderate_z():
    # EI / sigma = z T(z) + (df + z^2) / (df - 1) t(z), evaluated where the two
    # terms do not cancel much.
    df, sigma, mu = 4.0, 0.7, 0.2
    z = np.linspace(-2.0, 6.0, GRID_SIZE)
    best = mu + sigma * z
    closed_form = sigma * (z * stats.t.cdf(z, df) + (df + z**2) / (df - 1.0) * stats.t.pdf(z, df))
    predictive = dist.StudentT(df, jnp.full(z.shape, mu), sigma)
    values = np.asarray(expected_improvement(predictive, jnp.asarray(best)))
    np.testing.assert_allclose(values, closed_form, rtol=1e-12)


def test_student_t_approaches_gaussian_for_large_df():
    z = np.linspace(-5.0, 5.0, GRID_SIZE)
    gaussian = np.asarray(log_expected_improvement(standard_normal(z), 0.0))
    gap_1e4 = np.abs(np.asarray(log_expected_improvement(standard_student_t(z, 1e4), 0.0)) - gaussian)
    gap_1e6 = np.abs(np.asarray(log_expected_improvement(standard_student_t(z, 1e6), 0.0)) - gaussian)
    # The gap is largest at z = -5, where it is about 2e-4 for df = 1e6 because
    # the log densities differ by about z^4 / (4 df).
    assert gap_1e6.max() < 1e-3
    # The gap shrinks in proportion to 1 / df.
    assert gap_1e6.max() * 1e6 == pytest.approx(gap_1e4.max() * 1e4, rel=0.02)


@pytest.mark.parametrize("family", ["normal", "student_t"])
def test_log_ei_gradient_finite_at_z_minus_1e3(family):
    best = 0.0
    # The first candidate has z = (best - mu) / sigma = -1e3. The others give
    # the batch shape (4,) used across this module.
    mu = jnp.array([500.0, 1.0, -2.0, 0.3])
    sigma = jnp.array([0.5, 1.0, 2.0, 0.1])

    def log_ei(mu, sigma):
        if family == "normal":
            predictive = dist.Normal(mu, sigma)
        else:
            predictive = dist.StudentT(5.0, mu, sigma)
        return log_expected_improvement(predictive, best)

    value = log_ei(mu, sigma)[0]
    grad_mu, grad_sigma = (g[0] for g in jax.grad(lambda m, s: log_ei(m, s).sum(), argnums=(0, 1))(mu, sigma))
    assert np.isfinite(value)
    assert np.isfinite(grad_mu)
    assert grad_mu < 0.0
    assert np.isfinite(grad_sigma)
    assert grad_sigma > 0.0

    step_mu, step_sigma = 1e-4, 1e-7
    finite_difference_mu = (log_ei(mu.at[0].add(step_mu), sigma)[0] - log_ei(mu.at[0].add(-step_mu), sigma)[0]) / (
        2 * step_mu
    )
    finite_difference_sigma = (
        log_ei(mu, sigma.at[0].add(step_sigma))[0] - log_ei(mu, sigma.at[0].add(-step_sigma))[0]
    ) / (2 * step_sigma)
    assert float(grad_mu) == pytest.approx(float(finite_difference_mu), rel=1e-6)
    assert float(grad_sigma) == pytest.approx(float(finite_difference_sigma), rel=1e-6)


@pytest.mark.parametrize("z", [-1e3, -30.0, -5.0, -0.5, 0.0, 3.0, 1e3])
def test_gaussian_log_ei_gradient_matches_pi_over_ei(z):
    # d log EI / d mu = -P(f < best) / EI for the Gaussian.
    grad_mu = jax.grad(lambda mu: log_expected_improvement(dist.Normal(mu, 1.0), 0.0))(-z)
    log_pi = log_probability_of_improvement(standard_normal(z), 0.0)
    log_ei = log_expected_improvement(standard_normal(z), 0.0)
    expected = -np.exp(log_pi - log_ei)
    assert float(grad_mu) == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize(
    "make_predictive",
    [lambda loc, scale: dist.Normal(loc, scale), lambda loc, scale: dist.StudentT(3.0, loc, scale)],
    ids=["normal", "student_t"],
)
def test_log_ei_monotone_in_mean_and_scale(make_predictive):
    best = 0.0
    loc = np.concatenate([np.geomspace(1e3, 5.0, 48), np.linspace(4.5, -5.0, 16)])  # z from -1e3 to 5
    by_loc = np.asarray(log_expected_improvement(make_predictive(jnp.asarray(loc), 1.0), best))
    assert np.all(np.diff(by_loc) > 0.0)

    # dEI/dsigma is phi(z) for the Gaussian and (df + z^2) / (df - 1) t(z) for
    # the Student-t, both positive, so EI increases with the scale at any z.
    # Scales start at 0.5, so that z = (best - loc) / scale <= 4 for loc = -2:
    # at larger z the increase is below the rounding of EI ~ best - loc.
    for fixed_loc in (200.0, 3.0, -2.0):
        scale = np.geomspace(0.5, 50.0, GRID_SIZE)
        by_scale = np.asarray(log_expected_improvement(make_predictive(fixed_loc, jnp.asarray(scale)), best))
        assert np.all(np.diff(by_scale) > 0.0), fixed_loc


def test_student_t_ei_rejects_small_df():
    for df in (1.0, 0.5):
        with pytest.raises(ValueError, match="df > 1"):
            log_expected_improvement(dist.StudentT(df, 0.0, 1.0), 0.0)
    mixture = dist.MixtureSameFamily(
        dist.Categorical(probs=jnp.array([0.5, 0.5])), dist.StudentT(jnp.array([3.0, 1.0]), jnp.zeros((4, 2)), 1.0)
    )
    with pytest.raises(ValueError, match="df > 1"):
        log_expected_improvement(mixture, 0.0)


def test_traced_small_df_gives_nan():
    @jax.jit
    def log_ei(df):
        return log_expected_improvement(dist.StudentT(df, jnp.zeros(4), 1.0), 0.5)

    assert np.all(np.isnan(log_ei(1.0)))
    assert np.all(np.isfinite(log_ei(1.5)))


def test_gradient_in_df_raises():
    with pytest.raises(NotImplementedError, match="df"):
        jax.grad(lambda df: log_expected_improvement(dist.StudentT(df, 0.0, 1.0), 0.5))(4.0)


# ---------------------------------------------------------------------------
# Mixtures
# ---------------------------------------------------------------------------


# The mixture tests share the candidate count m = 4 with make_predictive below,
# so that the kernels compile once for shape (4, K).
MIXTURE_LOC = np.array([[0.0, 1.5], [-1.0, 30.0], [2.0, -3.0], [800.0, 0.4]])
MIXTURE_SCALE = np.array([[1.0, 0.3], [0.5, 2.0], [1.5, 0.1], [0.8, 1.0]])
MIXTURE_PROBS = np.array([[0.25, 0.75], [0.9, 0.1], [0.5, 0.5], [0.3, 0.7]])


def make_component(family, loc, scale):
    if family == "normal":
        return dist.Normal(loc, scale)
    return dist.StudentT(6.0, loc, scale)


@pytest.mark.parametrize("family", ["normal", "student_t"])
def test_mixture_single_component_equals_component(family):
    best = 0.1
    component = make_component(family, jnp.asarray(MIXTURE_LOC[:, :1]), jnp.asarray(MIXTURE_SCALE[:, :1]))
    mixture = dist.MixtureSameFamily(dist.Categorical(probs=jnp.ones((4, 1))), component)

    component_log_ei = np.asarray(log_expected_improvement(component, best))[:, 0]
    np.testing.assert_allclose(log_expected_improvement(mixture, best), component_log_ei, rtol=1e-14)
    component_log_pi = np.asarray(log_probability_of_improvement(component, best))[:, 0]
    np.testing.assert_allclose(log_probability_of_improvement(mixture, best), component_log_pi, rtol=1e-14)


@pytest.mark.parametrize("mixing", ["probs", "logits"])
@pytest.mark.parametrize("family", ["normal", "student_t"])
def test_mixture_two_components_equals_weighted_sum(family, mixing):
    best = -0.2
    probs = jnp.asarray(MIXTURE_PROBS)
    if mixing == "probs":
        categorical = dist.Categorical(probs=probs)
    else:
        categorical = dist.Categorical(logits=jnp.log(probs) + 3.0)
    component = make_component(family, jnp.asarray(MIXTURE_LOC), jnp.asarray(MIXTURE_SCALE))
    mixture = dist.MixtureSameFamily(categorical, component)

    component_ei = np.asarray(expected_improvement(component, best))
    expected_log_ei = np.log(np.sum(np.asarray(probs) * component_ei, axis=-1))
    np.testing.assert_allclose(log_expected_improvement(mixture, best), expected_log_ei, rtol=1e-13)

    component_pi = np.exp(np.asarray(log_probability_of_improvement(component, best)))
    expected_log_pi = np.log(np.sum(np.asarray(probs) * component_pi, axis=-1))
    np.testing.assert_allclose(log_probability_of_improvement(mixture, best), expected_log_pi, rtol=1e-13)


def test_mixture_log_ei_finite_far_in_tail():
    # Both components at z = -1e3 and -2e3 in the first row: the weighted sum
    # underflows in linear space, but logsumexp keeps it finite.
    loc = jnp.asarray(MIXTURE_LOC).at[0].set(jnp.array([1e3, 2e3]))
    component = dist.Normal(loc, 1.0)
    mixture = dist.MixtureSameFamily(dist.Categorical(probs=jnp.array([0.5, 0.5])), component)
    value = np.asarray(log_expected_improvement(mixture, 0.0))
    component_log_ei = np.asarray(log_expected_improvement(component, 0.0))
    assert np.all(np.isfinite(value))
    assert value[0] == pytest.approx(np.log(0.5) + component_log_ei[0, 0], rel=1e-12)


# ---------------------------------------------------------------------------
# Probability of improvement and upper confidence bound
# ---------------------------------------------------------------------------


def test_gaussian_log_pi_matches_closed_form():
    z = np.concatenate([-np.geomspace(1e-3, 1e3, 43), [0.0], np.geomspace(1e-3, 8.0, 20)])
    values = np.asarray(log_probability_of_improvement(standard_normal(z), 0.0))
    np.testing.assert_allclose(values, stats.norm.logcdf(z), rtol=1e-13)


@pytest.mark.parametrize("df", [0.5, 1.0, 2.5, 5.0, 30.0, 1e3])
def test_student_t_log_pi_matches_quadrature(df):
    z = np.concatenate([-np.geomspace(1e-3, 1e3, 48), np.geomspace(1e-3, 30.0, 16)])
    values = np.asarray(log_probability_of_improvement(standard_student_t(z, df), 0.0))
    reference = np.array([student_t_log_cdf_and_log_ei_by_quadrature(zi, df)[0] for zi in z])
    np.testing.assert_allclose(values, reference, rtol=1e-11)


def test_student_t_log_pi_matches_cauchy_closed_form():
    z = np.linspace(-50.0, 50.0, GRID_SIZE)
    values = np.asarray(log_probability_of_improvement(standard_student_t(z, 1.0), 0.0))
    np.testing.assert_allclose(values, np.log(0.5 + np.arctan(z) / np.pi), rtol=1e-13)


@pytest.mark.parametrize("family", ["normal", "student_t"])
def test_log_pi_gradient_finite_in_far_tail(family):
    # The first candidate has z = -1e3.
    mu = jnp.array([500.0, 1.0, -2.0, 0.3])
    sigma = jnp.array([0.5, 1.0, 2.0, 0.1])

    def log_pi(mu):
        predictive = dist.Normal(mu, sigma) if family == "normal" else dist.StudentT(5.0, mu, sigma)
        return log_probability_of_improvement(predictive, 0.0)

    grad = jax.grad(lambda mu: log_pi(mu).sum())(mu)[0]
    assert np.isfinite(grad)
    assert grad < 0.0
    step = 1e-4
    finite_difference = (log_pi(mu.at[0].add(step))[0] - log_pi(mu.at[0].add(-step))[0]) / (2 * step)
    assert float(grad) == pytest.approx(float(finite_difference), rel=1e-6)


def test_ucb_closed_forms():
    loc = jnp.array([0.0, 1.0, -2.0])
    scale = jnp.array([1.0, 0.5, 2.0])
    beta = 3.0
    np.testing.assert_allclose(
        upper_confidence_bound(dist.Normal(loc, scale), beta), np.sqrt(beta) * scale - loc, rtol=1e-14
    )

    df = 5.0
    expected_t = np.sqrt(beta) * scale * np.sqrt(df / (df - 2.0)) - loc
    np.testing.assert_allclose(upper_confidence_bound(dist.StudentT(df, loc, scale), beta), expected_t, rtol=1e-14)

    probs = jnp.array([0.3, 0.7])
    component_loc = jnp.stack([loc, loc + 1.0], axis=-1)
    component_scale = jnp.stack([scale, 2.0 * scale], axis=-1)
    mixture = dist.MixtureSameFamily(dist.Categorical(probs=probs), dist.Normal(component_loc, component_scale))
    mean = np.sum(probs * component_loc, axis=-1)
    variance = np.sum(probs * (component_scale**2 + component_loc**2), axis=-1) - mean**2
    expected_mixture = np.sqrt(beta) * np.sqrt(variance) - mean
    np.testing.assert_allclose(upper_confidence_bound(mixture, beta), expected_mixture, rtol=1e-13)


def test_ucb_default_beta_is_two():
    predictive = dist.Normal(jnp.array([0.5]), 2.0)
    np.testing.assert_allclose(upper_confidence_bound(predictive), np.sqrt(2.0) * 2.0 - 0.5, rtol=1e-15)


def test_ucb_student_t_infinite_variance_raises():
    with pytest.raises(ValueError, match="df > 2"):
        upper_confidence_bound(dist.StudentT(2.0, 0.0, 1.0))


# ---------------------------------------------------------------------------
# Dispatch, transformations and helpers
# ---------------------------------------------------------------------------


def test_unsupported_predictive_raises_type_error():
    gamma = dist.Gamma(jnp.ones(3), 1.0)
    for function in (log_expected_improvement, expected_improvement, log_probability_of_improvement):
        with pytest.raises(TypeError, match="Gamma.*Normal, StudentT"):
            function(gamma, 0.0)
    with pytest.raises(TypeError, match="Gamma"):
        upper_confidence_bound(gamma)
    mixture = dist.MixtureSameFamily(dist.Categorical(probs=jnp.array([0.5, 0.5])), dist.Gamma(jnp.ones((3, 2)), 1.0))
    with pytest.raises(TypeError, match="Gamma"):
        log_expected_improvement(mixture, 0.0)


def test_predictive_with_log_ei_method_is_delegated():
    class BarPredictive:
        def log_expected_improvement(self, best):
            return jnp.full(4, best - 1.0)

    np.testing.assert_array_equal(log_expected_improvement(BarPredictive(), 2.0), np.ones(4))
    np.testing.assert_allclose(expected_improvement(BarPredictive(), 2.0), np.full(4, np.e), rtol=1e-15)


def make_predictive(kind):
    """Build the predictive inside a test, so that its arrays are float64."""
    loc = jnp.array([-3.0, 0.1, 4.0, 800.0])
    scale = jnp.array([1.0, 0.2, 2.0, 0.8])
    if kind == "normal":
        return dist.Normal(loc, scale)
    if kind == "student_t":
        return dist.StudentT(3.5, loc, scale)
    component_loc = jnp.stack([loc, loc + 0.5], axis=-1)
    component_scale = jnp.stack([scale, 2.0 * scale], axis=-1)
    categorical = dist.Categorical(probs=jnp.asarray(MIXTURE_PROBS))
    return dist.MixtureSameFamily(categorical, dist.StudentT(6.0, component_loc, component_scale))


PREDICTIVE_KINDS = ["mixture", "normal", "student_t"]


@pytest.mark.parametrize("kind", PREDICTIVE_KINDS)
def test_acquisitions_under_jit_equal_eager(kind):
    predictive = make_predictive(kind)

    def all_acquisitions(predictive, best):
        return {name: acquisition(predictive, best, 2.0) for name, acquisition in ACQUISITIONS.items()}

    eager = all_acquisitions(predictive, 0.3)
    jitted = jax.jit(all_acquisitions)(predictive, 0.3)
    for name in ACQUISITIONS:
        assert eager[name].shape == (4,), name
        assert np.all(np.isfinite(eager[name])), name
        np.testing.assert_allclose(jitted[name], eager[name], rtol=1e-13, err_msg=name)


@pytest.mark.parametrize("kind", ["normal", "student_t"])
def test_log_ei_under_vmap_equals_eager(kind):
    locs = jnp.array([[0.0, 1.0, 2.0, -4.0], [-1.0, 50.0, 3.0, 0.2]])
    scales = jnp.array([[1.0, 0.5, 2.0, 0.7], [0.1, 0.3, 4.0, 1.1]])

    def acquisition(loc, scale):
        predictive = dist.Normal(loc, scale) if kind == "normal" else dist.StudentT(3.0, loc, scale)
        return log_expected_improvement(predictive, 0.2)

    batched = jax.vmap(acquisition)(locs, scales)
    eager = np.stack([acquisition(loc, scale) for loc, scale in zip(locs, scales)])
    np.testing.assert_allclose(batched, eager, rtol=1e-13)


def test_gradient_through_candidate_inputs_under_jit():
    # A toy surrogate whose mean and scale depend on the candidate x.
    def acquisition_at(x):
        predictive = dist.StudentT(6.0, jnp.sin(3.0 * x) + 40.0 * x**2, 0.1 + x**2)
        return log_expected_improvement(predictive, -0.5).sum()

    x = jnp.array([-2.0, -0.3, 0.4, 1.0])
    gradient = jax.jit(jax.grad(acquisition_at))(x)
    step = 1e-6
    finite_difference = np.array(
        [(acquisition_at(x.at[i].add(step)) - acquisition_at(x.at[i].add(-step))) / (2 * step) for i in range(x.size)]
    )
    np.testing.assert_allclose(gradient, finite_difference, rtol=1e-6, atol=1e-6)


def test_second_derivative_is_finite():
    # The derivative rules are differentiable themselves, for Newton-type optimizers.
    second = jax.grad(jax.grad(lambda mu: log_expected_improvement(dist.StudentT(5.0, mu, 1.0), 0.0)))(3.0)
    assert np.isfinite(second)
    assert second != 0.0


def test_float32_inputs_stay_float32_and_finite():
    loc = jnp.array([-2.0, 0.0, 3.0, 1e3], jnp.float32)
    for predictive in (dist.Normal(loc, jnp.float32(1.0)), dist.StudentT(jnp.float32(5.0), loc, jnp.float32(1.0))):
        for acquisition in (log_expected_improvement, log_probability_of_improvement):
            values = acquisition(predictive, jnp.float32(0.0))
            assert values.dtype == jnp.float32
            assert np.all(np.isfinite(values))


def test_acquisitions_table_has_uniform_signature():
    assert set(ACQUISITIONS) == {"logei", "ucb", "pi"}
    predictive = make_predictive("normal")
    best, beta = 0.3, 9.0
    expected = {
        "logei": log_expected_improvement(predictive, best),
        "pi": log_probability_of_improvement(predictive, best),
        "ucb": upper_confidence_bound(predictive, beta),
    }
    for name, values in expected.items():
        np.testing.assert_allclose(ACQUISITIONS[name](predictive, best, beta), values, err_msg=name)


def test_thompson_choice_returns_argmin():
    samples = jnp.array([0.3, -1.0, 2.0, -0.5])
    assert int(thompson_choice(samples)) == 1
    assert int(jax.jit(thompson_choice)(samples)) == 1
    np.testing.assert_array_equal(thompson_choice(jnp.stack([samples, -samples])), [1, 2])
