"""The bar distribution against numerical integrals of its own density."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import integrate

from probnn.bo.acquisition import (
    log_expected_improvement,
    log_probability_of_improvement,
    upper_confidence_bound,
)
from probnn.pfn.bar import BarDistribution, bar_borders

BORDERS = np.array([-2.0, -1.0, -0.2, 0.0, 0.5, 1.5, 3.0])
LOGITS = np.array([0.3, -0.5, 1.0, 0.2, -1.0, 0.4])


@pytest.fixture
def bar():
    return BarDistribution(jnp.asarray(BORDERS), jnp.asarray(LOGITS))


def _density(bar, y):
    return float(jnp.exp(bar.log_prob(jnp.asarray(y))))


def _integral(function, low=-40.0, high=40.0):
    points = list(BORDERS[1:-1])
    value, _ = integrate.quad(function, low, high, points=points, limit=400, epsabs=1e-12, epsrel=1e-11)
    return value


def test_bar_density_integrates_to_one(bar):
    assert _integral(lambda y: _density(bar, y)) == pytest.approx(1.0, abs=1e-8)


def test_bar_bucket_masses_equal_probs(bar):
    probs = np.asarray(bar.probs)
    # Inner buckets by integration of the density over each bucket.
    for k in range(1, len(LOGITS) - 1):
        mass, _ = integrate.quad(lambda y: _density(bar, y), BORDERS[k], BORDERS[k + 1])
        assert mass == pytest.approx(probs[k], rel=1e-9)


def test_bar_tail_median_is_outer_width(bar):
    # The half-normal tail puts half its mass within one outer-bucket width of b_1.
    mass, _ = integrate.quad(lambda y: _density(bar, y), BORDERS[1] - (BORDERS[1] - BORDERS[0]), BORDERS[1])
    assert mass == pytest.approx(0.5 * float(bar.probs[0]), rel=1e-9)


@pytest.mark.parametrize("y", [-6.0, -1.3, -0.1, 0.0, 0.7, 2.9, 5.0])
def test_bar_cdf_matches_integral(bar, y):
    expected = _integral(lambda t: _density(bar, t), high=y)
    assert float(bar.cdf(jnp.asarray(y))) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("q", [1e-6, 0.01, 0.2, 0.5, 0.93, 0.999])
def test_bar_icdf_inverts_cdf(bar, q):
    assert float(bar.cdf(bar.icdf(jnp.asarray(q)))) == pytest.approx(q, rel=1e-6)


def test_bar_mean_matches_integral(bar):
    assert float(bar.mean) == pytest.approx(_integral(lambda y: y * _density(bar, y)), abs=1e-8)


def test_bar_variance_matches_integral(bar):
    mean = float(bar.mean)
    expected = _integral(lambda y: (y - mean) ** 2 * _density(bar, y))
    assert float(bar.variance) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("best", [-8.0, -1.5, -0.6, 0.25, 1.0, 2.0, 4.0, 9.0])
def test_bar_log_ei_matches_integral(bar, best):
    expected = _integral(lambda y: max(best - y, 0.0) * _density(bar, y), high=best)
    assert float(jnp.exp(bar.log_expected_improvement(jnp.asarray(best)))) == pytest.approx(expected, rel=1e-7)


def test_bar_log_ei_gradient_finite_far_left(bar):
    grad = jax.grad(lambda b: bar.log_expected_improvement(b))(jnp.asarray(-50.0))
    assert np.isfinite(float(grad))


def test_bar_log_ei_gradient_matches_difference(bar):
    # d EI / d best = P(Y < best), so d log EI / d best = P(Y < best) / EI.
    best = jnp.asarray(0.3)
    grad = float(jax.grad(lambda b: bar.log_expected_improvement(b))(best))
    expected = float(bar.cdf(best)) / float(jnp.exp(bar.log_expected_improvement(best)))
    assert grad == pytest.approx(expected, rel=1e-8)


def test_bar_log_cdf_far_left_finite(bar):
    # exp(log_cdf) underflows at y = -60, so compare with the Gaussian tail formula in logs.
    assert np.isfinite(float(bar.log_cdf(jnp.asarray(-60.0))))


def test_bar_sample_mean_within_four_standard_errors(bar):
    draws = bar.sample(jax.random.key(0), (200_000,))
    standard_error = np.sqrt(float(bar.variance) / draws.shape[0])
    assert abs(float(jnp.mean(draws)) - float(bar.mean)) < 4 * standard_error


def test_bar_affine_shifts_log_density(bar):
    moved = bar.affine(1.5, 2.0)
    y = jnp.asarray([-3.0, 0.1, 0.9, 4.0])
    expected = bar.log_prob((y - 1.5) / 2.0) - jnp.log(2.0)
    np.testing.assert_allclose(moved.log_prob(y), expected, rtol=1e-12)


def test_bar_batch_broadcasts_borders_and_logits():
    logits = jnp.stack([jnp.asarray(LOGITS), jnp.asarray(LOGITS[::-1])])
    bar = BarDistribution(jnp.asarray(BORDERS), logits)
    assert bar.log_prob(jnp.asarray([0.1, 0.1])).shape == (2,)


def test_bar_project_masses_match_normal():
    bar = BarDistribution(jnp.asarray(BORDERS), jnp.zeros(6))
    normal = dist.Normal(0.3, 0.8)
    projected = bar.project(normal)
    cdf = normal.cdf(jnp.asarray(BORDERS[1:-1]))
    expected = np.diff(np.concatenate([[0.0], np.asarray(cdf), [1.0]]))
    np.testing.assert_allclose(projected.probs, expected, rtol=1e-10)


def test_acquisitions_accept_bar_distribution(bar):
    values = [
        log_expected_improvement(bar, 0.2),
        log_probability_of_improvement(bar, 0.2),
        upper_confidence_bound(bar, 2.0),
    ]
    assert all(np.isfinite(float(v)) for v in values)


def test_bar_borders_are_quantiles():
    samples = np.random.default_rng(0).normal(size=100_000)
    borders = bar_borders(samples, 10)
    np.testing.assert_allclose(borders[5], np.median(samples), atol=1e-12)


def test_bar_borders_strictly_increase_with_ties():
    samples = np.concatenate([np.zeros(500), np.linspace(-1, 1, 500)])
    assert np.all(np.diff(bar_borders(samples, 50)) > 0)


def test_bar_borders_reject_too_few_samples():
    with pytest.raises(ValueError, match="at least"):
        bar_borders(np.zeros(10), 100)


def test_bar_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one more entry"):
        BarDistribution(jnp.zeros(5), jnp.zeros(5))
