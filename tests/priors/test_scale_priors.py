"""Scale priors: the Burr XII distribution against SciPy, and the checks on user priors."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.stats

from probnn.priors import BurrXII, check_scale_prior
from probnn.priors.scale import SCALE_PRIORS, prior_parameters, rebuild_prior

BURR_CASES = [(2.0, 3.0, 1.5), (0.7, 4.0, 0.2), (5.0, 0.6, 3.0)]


@pytest.mark.parametrize("c, k, scale", BURR_CASES)
def test_burr_log_prob_and_cdf_match_scipy(c, k, scale):
    values = np.array([1e-4, 0.05, 0.3, 1.0, 2.5, 40.0])
    ours = BurrXII(c, k, scale)
    reference = scipy.stats.burr12(c, k, scale=scale)
    np.testing.assert_allclose(ours.log_prob(values), reference.logpdf(values), rtol=1e-10)
    np.testing.assert_allclose(ours.cdf(values), reference.cdf(values), rtol=1e-10)


@pytest.mark.parametrize("c, k, scale", BURR_CASES)
def test_burr_icdf_inverts_cdf(c, k, scale):
    q = np.array([1e-9, 0.01, 0.3, 0.5, 0.9, 0.999])
    ours = BurrXII(c, k, scale)
    np.testing.assert_allclose(ours.icdf(q), scipy.stats.burr12(c, k, scale=scale).ppf(q), rtol=1e-9)
    np.testing.assert_allclose(ours.cdf(ours.icdf(q)), q, rtol=1e-9)


def test_burr_moments_match_scipy_and_flag_infinite_ones():
    finite = BurrXII(3.0, 2.0, 1.5)
    reference = scipy.stats.burr12(3.0, 2.0, scale=1.5)
    np.testing.assert_allclose(finite.mean, reference.mean(), rtol=1e-10)
    np.testing.assert_allclose(finite.variance, reference.var(), rtol=1e-9)
    heavy = BurrXII(1.0, 0.8)  # c k = 0.8: no mean
    assert np.isinf(heavy.mean)
    assert np.isinf(BurrXII(1.0, 1.5).variance)  # c k = 1.5: mean but no variance


def test_burr_samples_follow_cdf():
    # Kolmogorov-Smirnov at a fixed seed; a correct sampler fails with probability 1e-3.
    c, k, scale = 2.0, 3.0, 1.5
    draws = BurrXII(c, k, scale).sample(jax.random.key(3), (20000,))
    assert draws.shape == (20000,)
    assert bool(jnp.all(draws > 0))
    p_value = scipy.stats.kstest(np.asarray(draws), scipy.stats.burr12(c, k, scale=scale).cdf).pvalue
    assert p_value > 1e-3


def test_burr_samples_are_reparameterised():
    # d s / d scale = s / scale, because s = scale * z with z independent of the scale.
    key = jax.random.key(0)
    draws = BurrXII(2.0, 3.0, 1.5).sample(key, (5,))
    gradient = jax.grad(lambda scale: jnp.sum(BurrXII(2.0, 3.0, scale).sample(key, (5,))))(1.5)
    np.testing.assert_allclose(gradient, jnp.sum(draws) / 1.5, rtol=1e-10)


def test_burr_warns_on_values_outside_support_when_validating():
    prior = BurrXII(2.0, 3.0, validate_args=True)
    with pytest.warns(UserWarning, match="Out-of-support"):
        prior.log_prob(-1.0)


@pytest.mark.parametrize("name", sorted(SCALE_PRIORS))
def test_named_priors_are_positive_scalar_distributions(name):
    prior = check_scale_prior(SCALE_PRIORS[name]())
    draws = prior.sample(jax.random.key(1), (1000,))
    assert bool(jnp.all(draws > 0))
    assert bool(jnp.all(jnp.isfinite(prior.log_prob(draws))))


@pytest.mark.parametrize(
    "prior, expected",
    [
        (dist.Normal(0.0, 1.0), "support"),
        (dist.Uniform(-1.0, 1.0), "support"),
        (dist.Poisson(2.0), "support"),
        (dist.InverseGamma(jnp.ones(3), 1.0), "scalar"),
        (3.0, "numpyro distribution"),
    ],
)
def test_check_scale_prior_rejects(prior, expected):
    with pytest.raises(ValueError, match=expected):
        check_scale_prior(prior)


def test_check_scale_prior_accepts_other_positive_distributions():
    for prior in (dist.Gamma(2.0, 1.0), dist.Exponential(1.0), dist.Weibull(1.0, 2.0), dist.HalfNormal(1.0)):
        assert check_scale_prior(prior) is prior


def test_rebuild_prior_round_trips_parameters():
    for prior in (dist.InverseGamma(2.0, 3.0), BurrXII(2.0, 3.0, 0.5), dist.LogNormal(-1.0, 0.3)):
        copy = rebuild_prior(prior, prior_parameters(prior))
        assert type(copy) is type(prior)
        values = jnp.array([0.1, 1.0, 7.0])
        np.testing.assert_allclose(copy.log_prob(values), prior.log_prob(values), rtol=1e-14)
