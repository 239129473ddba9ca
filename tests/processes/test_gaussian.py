"""Gaussian process regression checked against direct numpy and scipy computations."""

import jax
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.linalg
import scipy.stats

from probnn.kernels import RBF
from probnn.processes import GaussianProcess, exact

LENGTHSCALE = 0.6
KERNEL_VARIANCE = 1.4
NOISE = 0.05

# Settings shared with test_bad_input.py, so the compiled fit program is reused.
FAST_FIT = {"num_restarts": 2, "max_iterations": 50}


def rbf_numpy(A, B):
    """Squared-exponential kernel written directly in numpy."""
    squared_distance = np.sum((A[:, None, :] - B[None, :, :]) ** 2, axis=-1) / LENGTHSCALE**2
    return KERNEL_VARIANCE * np.exp(-0.5 * squared_distance)


def direct_posterior(X, y, X_new):
    """Latent posterior mean and covariance at ``X_new`` on the original target scale.

    The process standardises ``y`` by its mean and (ddof 0) standard deviation, and the
    noise variance applies on that scale, so the algebra runs on the standardised
    targets and the result is mapped back.
    """
    y_mean, y_scale = np.mean(y), np.std(y)
    y_standardized = (y - y_mean) / y_scale
    factor = scipy.linalg.cho_factor(rbf_numpy(X, X) + NOISE * np.eye(X.shape[0]), lower=True)
    cross = rbf_numpy(X, X_new)
    mean = cross.T @ scipy.linalg.cho_solve(factor, y_standardized)
    covariance = rbf_numpy(X_new, X_new) - cross.T @ scipy.linalg.cho_solve(factor, cross)
    return y_mean + y_scale * mean, y_scale**2 * covariance


def make_process():
    return GaussianProcess(RBF(lengthscale=LENGTHSCALE, variance=KERNEL_VARIANCE), noise=NOISE)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    X = rng.uniform(-1.0, 1.0, (17, 2))
    y = 4.0 * np.sin(2.5 * X[:, 0]) * np.cos(X[:, 1]) - 7.0 + 0.2 * rng.standard_normal(17)
    X_new = np.array([[-0.8, 0.1], [-0.3, 0.9], [0.0, 0.0], [0.4, -0.6], [0.9, 0.5], [2.0, -2.0]])
    return X, y, X_new


@pytest.mark.parametrize("n", [12, 15, 16, 17])
def test_predictive_matches_numpy(data, n):
    """Mean and variance equal the direct computation, with 15 and 17 points padded and 16 not."""
    X, y, X_new = data
    X, y = X[:n], y[:n]
    posterior = make_process().condition(X, y)
    mean, covariance = direct_posterior(X, y, X_new)
    y_scale = np.std(y)

    latent = posterior.predict(X_new, latent=True)
    noisy = posterior.predict(X_new)
    assert isinstance(noisy, dist.Normal)
    np.testing.assert_allclose(latent.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(latent.variance, np.diag(covariance), rtol=1e-9)
    np.testing.assert_allclose(noisy.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(noisy.variance, np.diag(covariance) + NOISE * y_scale**2, rtol=1e-9)


@pytest.mark.parametrize("n", [12, 15, 16, 17])
def test_log_marginal_matches_scipy(data, n):
    X, y, _ = data
    X, y = X[:n], y[:n]
    A = rbf_numpy(X, X) + NOISE * np.eye(n)
    model = make_process()

    expected = scipy.stats.multivariate_normal(np.zeros(n), A).logpdf(y)
    actual = float(model.log_marginal_likelihood(X, y))
    assert abs(actual - expected) <= 1e-10 * abs(expected)

    # The posterior's value is for the original targets: y = mean + scale * z with
    # z ~ N(0, A) on the standardised scale.
    y_mean, y_scale = np.mean(y), np.std(y)
    expected = scipy.stats.multivariate_normal(np.full(n, y_mean), y_scale**2 * A).logpdf(y)
    actual = float(model.condition(X, y).log_marginal_likelihood())
    assert abs(actual - expected) <= 1e-10 * abs(expected)


def test_padding_across_bucket(data):
    """16 points fill the smallest bucket exactly and 17 are padded to 32, and both match numpy."""
    X, y, X_new = data
    posteriors = {n: make_process().condition(X[:n], y[:n]) for n in (16, 17)}
    assert posteriors[16].data.X.shape[0] == 16
    assert posteriors[17].data.X.shape[0] == 32
    assert posteriors[17].num_data == 17
    np.testing.assert_array_equal(posteriors[17].X, X)
    np.testing.assert_allclose(posteriors[17].y, y, rtol=1e-12)

    for n, posterior in posteriors.items():
        mean, covariance = direct_posterior(X[:n], y[:n], X_new)
        predictive = posterior.predict(X_new, latent=True)
        np.testing.assert_allclose(predictive.mean, mean, rtol=1e-10)
        np.testing.assert_allclose(predictive.variance, np.diag(covariance), rtol=1e-9)


def test_sample_functions_moments(data):
    """Joint draws have the posterior mean and covariance of the latent function.

    Each sample mean and covariance entry must lie within 6 standard errors (estimated
    from the draws) of the closed form. For the 5 + 15 compared statistics a random key
    would fail with probability about 4e-8, an estimate from the normal approximation of
    the sample moments. The key is fixed, so the test is deterministic.
    """
    X, y, X_new = data
    X_new = X_new[:5]
    posterior = make_process().condition(X, y)
    num_samples = 20_000

    draws = np.asarray(posterior.sample_functions(jax.random.key(2), X_new, num_samples))
    assert draws.shape == (num_samples, X_new.shape[0])
    assert np.all(np.isfinite(draws))

    mean, covariance = direct_posterior(X, y, X_new)
    sample_mean = draws.mean(axis=0)
    mean_error = draws.std(axis=0) / np.sqrt(num_samples)
    assert np.all(np.abs(sample_mean - mean) < 6.0 * mean_error)

    centred = draws - sample_mean
    products = centred[:, :, None] * centred[:, None, :]
    sample_covariance = products.mean(axis=0)
    covariance_error = products.std(axis=0) / np.sqrt(num_samples)
    upper = np.triu_indices(X_new.shape[0])
    assert np.all(np.abs(sample_covariance - covariance)[upper] < 6.0 * covariance_error[upper])


def test_fit_increases_marginal_likelihood():
    """Fitting from a poor start (lengthscale 3 for sin(6x)) raises the marginal likelihood.

    L-BFGS starts from the initial values and only accepts descent steps, so the
    penalised objective cannot decrease. The marginal likelihood alone should rise too
    for these data, by far more than the hyperprior can offset.
    """
    rng = np.random.default_rng(3)
    X = np.sort(rng.uniform(0.0, 1.0, 12))[:, None]
    y = np.sin(6.0 * X[:, 0]) + 0.05 * rng.standard_normal(12)
    model = GaussianProcess(RBF(lengthscale=3.0), **FAST_FIT)

    initial = model.condition(X, y)
    fitted = model.fit(X, y, key=jax.random.key(0))
    initial_value = float(initial.log_marginal_likelihood())
    fitted_value = float(fitted.log_marginal_likelihood())

    assert fitted_value > initial_value + 1.0
    assert fitted_value + float(fitted.model.log_hyperprior()) > initial_value + float(
        initial.model.log_hyperprior()
    )
    assert float(fitted.model.kernel.lengthscale[0]) < 3.0


def test_refit_same_bucket_no_retrace(monkeypatch):
    """Refitting with 17 to 32 points reuses the program compiled for the bucket of 32.

    ``_fit_loss`` runs only while ``_fit_program`` is traced, so counting its calls
    counts traces. The program's cache is cleared first, so the first fit must trace
    once whatever other tests compiled, which shows that the counter counts traces.
    """
    traces = []
    original_fit_loss = exact._fit_loss

    def counting_fit_loss(model, data):
        traces.append(data.X.shape)
        return original_fit_loss(model, data)

    monkeypatch.setattr(exact, "_fit_loss", counting_fit_loss)
    exact._fit_program._cached.clear_cache()

    rng = np.random.default_rng(4)
    model = GaussianProcess(RBF(), **FAST_FIT)
    for index, n in enumerate((17, 18, 32)):
        X = rng.uniform(0.0, 1.0, (n, 1))
        y = np.sin(6.0 * X[:, 0]) + 0.05 * rng.standard_normal(n)
        posterior = model.fit(X, y, key=jax.random.key(index))
        assert posterior.data.X.shape == (32, 1)
        assert traces == [(32, 1)]
