"""Exact processes with a fixed mean function: closed forms, reversion to the mean, bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from probnn.kernels import RBF
from probnn.nets import MLP, train_network
from probnn.processes import GaussianProcess, StudentTProcess

LENGTHSCALE = 0.3
NOISE = 0.01


def truth(X):
    return np.sin(3.0 * X[:, 0]) + X[:, 0]


def rbf_numpy(A, B):
    squared_distance = np.sum((A[:, None, :] - B[None, :, :]) ** 2, axis=-1) / LENGTHSCALE**2
    return np.exp(-0.5 * squared_distance)


@pytest.fixture(scope="module")
def network():
    """An MLP trained on 200 noise-free points of ``truth`` over [-2, 2]."""
    X = np.linspace(-2.0, 2.0, 200)[:, None]
    model, _ = train_network(MLP(1, (50, 50), key=jax.random.key(0)), X, truth(X), key=jax.random.key(1), num_steps=3000)
    return model


@pytest.fixture(scope="module")
def data():
    """Twelve noisy observations, all in [-2, -1]: the right half of the range is far from data."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-2.0, -1.0, (12, 1))
    y = truth(X) + 0.05 * rng.standard_normal(12)
    return X, y


def direct_moments(X, y, X_new, mean_values, mean_new):
    """GP mean and latent variance with prior mean ``m``, written out in numpy.

    The residuals ``r = y - m(X)`` are standardised by their mean ``c`` and standard
    deviation ``s``, the noise variance applies on that scale, and the result is mapped back:
    ``mu = m(x) + c + s k_*^T A^{-1} (r - c) / s``, ``var = s^2 (k_** - k_*^T A^{-1} k_*)``.
    """
    residual = y - mean_values
    c, s = np.mean(residual), np.std(residual)
    factor = scipy.linalg.cho_factor(rbf_numpy(X, X) + NOISE * np.eye(len(y)), lower=True)
    cross = rbf_numpy(X, X_new)
    mean = mean_new + c + s * cross.T @ scipy.linalg.cho_solve(factor, (residual - c) / s)
    variance = s**2 * (1.0 - np.sum(cross * scipy.linalg.cho_solve(factor, cross), axis=0))
    quadratic = (residual - c) / s @ scipy.linalg.cho_solve(factor, (residual - c) / s)
    return mean, variance, quadratic


def test_network_learned_truth(network):
    X = np.linspace(-2.0, 2.0, 41)[:, None]
    assert float(np.max(np.abs(np.asarray(network(X)) - truth(X)))) < 0.05


def test_mean_reverts_to_network_far_away(network, data):
    X, y = data
    X_far = np.linspace(1.0, 2.0, 11)[:, None]
    with_mean = GaussianProcess(RBF(lengthscale=LENGTHSCALE), noise=NOISE, mean_function=network).condition(X, y)
    zero_mean = GaussianProcess(RBF(lengthscale=LENGTHSCALE), noise=NOISE).condition(X, y)

    error_with_mean = np.max(np.abs(with_mean.predict(X_far).mean - truth(X_far)))
    assert error_with_mean < 0.1
    # The zero-mean GP reverts to the mean of y far from the data, which misses the truth.
    np.testing.assert_allclose(zero_mean.predict(X_far).mean, np.mean(y), atol=1e-6)
    assert np.max(np.abs(zero_mean.predict(X_far).mean - truth(X_far))) > 2.0


def test_gaussian_posterior_matches_closed_form(network, data):
    X, y = data
    X_new = np.array([[-1.9], [-1.5], [-0.7], [0.0], [1.3]])
    posterior = GaussianProcess(RBF(lengthscale=LENGTHSCALE), noise=NOISE, mean_function=network).condition(X, y)
    mean_values = np.asarray(network(X), dtype=np.float64)
    mean_new = np.asarray(network(X_new), dtype=np.float64)
    mean, variance, _ = direct_moments(X, y, X_new, mean_values, mean_new)
    s2 = np.var(y - mean_values)

    latent = posterior.predict(X_new, latent=True)
    np.testing.assert_allclose(latent.mean, mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(latent.variance, variance, rtol=1e-7, atol=1e-12)
    noisy = posterior.predict(X_new)
    np.testing.assert_allclose(noisy.variance, variance + s2 * NOISE, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(posterior.y, y, rtol=1e-12)

    # The same prediction traced under jit, as the BO acquisition optimizer runs it. The
    # compiled float32 network may round differently, by a few float32 ulps.
    jitted = eqx.filter_jit(lambda p, x: p.predict(x, latent=True).mean)(posterior, jnp.asarray(X_new))
    np.testing.assert_allclose(jitted, mean, rtol=1e-6, atol=1e-6)


def test_student_t_posterior_matches_closed_form(network, data):
    X, y = data
    X_new = np.array([[-1.2], [0.4], [1.8]])
    alpha, beta = 3.0, 2.0
    process = StudentTProcess(
        RBF(lengthscale=LENGTHSCALE), alpha=alpha, beta=beta, noise=NOISE, learn_scale_prior=False, mean_function=network
    )
    posterior = process.condition(X, y)
    mean_values = np.asarray(network(X), dtype=np.float64)
    mean, variance, quadratic = direct_moments(X, y, X_new, mean_values, np.asarray(network(X_new), dtype=np.float64))
    n = len(y)
    predictive = posterior.predict(X_new, latent=True)
    np.testing.assert_allclose(predictive.loc, mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(predictive.df, 2 * alpha + n)
    np.testing.assert_allclose(predictive.scale**2, variance * (2 * beta + quadratic) / (2 * alpha + n), rtol=1e-7)


def test_log_marginal_likelihood_of_residuals(network, data):
    X, y = data
    process = GaussianProcess(RBF(lengthscale=LENGTHSCALE), noise=NOISE, mean_function=network)
    mean_values = np.asarray(network(X), dtype=np.float64)
    covariance = rbf_numpy(X, X) + NOISE * np.eye(len(y))
    expected = scipy.stats.multivariate_normal(mean_values, covariance).logpdf(y)
    np.testing.assert_allclose(process.log_marginal_likelihood(X, y), expected, rtol=1e-10)


def test_function_samples_centred_on_mean(network, data):
    """The average of 4000 joint draws is within 5 Monte Carlo standard errors of the mean."""
    X, y = data
    X_new = np.array([[-1.4], [0.5], [1.5]])
    posterior = GaussianProcess(RBF(lengthscale=LENGTHSCALE), noise=NOISE, mean_function=network).condition(X, y)
    draws = np.asarray(posterior.sample_functions(jax.random.key(3), X_new, 4000))
    predictive = posterior.predict(X_new, latent=True)
    standard_error = np.sqrt(np.asarray(predictive.variance) / 4000)
    assert np.all(np.abs(draws.mean(axis=0) - predictive.mean) < 5.0 * standard_error)


def test_fit_keeps_mean_function_fixed(network, data):
    X, y = data
    posterior = GaussianProcess(RBF(), mean_function=network, num_restarts=2, max_iterations=50).fit(X, y, key=jax.random.key(4))
    fitted = posterior.model.mean_function
    for before, after in zip(jax.tree.leaves(network), jax.tree.leaves(fitted)):
        np.testing.assert_array_equal(before, after)
    # The fit still conditions on the data: the mean at the data is close to the targets.
    assert np.max(np.abs(posterior.predict(X).mean - y)) < 0.2


def test_gradient_through_mean_function(network, data):
    X, y = data
    posterior = GaussianProcess(RBF(lengthscale=LENGTHSCALE), noise=NOISE, mean_function=network).condition(X, y)
    x0 = jnp.array([[1.5]])
    gradient = jax.grad(lambda x: posterior.predict(x, latent=True).mean[0])(x0)
    # Far from the data the mean is the network plus a constant, so its slope is the network's.
    network_slope = jax.grad(lambda x: network(x)[0])(x0)
    np.testing.assert_allclose(gradient, network_slope, rtol=1e-3, atol=1e-3)


def test_wrong_output_shape_rejected(data):
    X, y = data
    column = MLP(1, (4,), key=jax.random.key(0), out_features=1)
    with pytest.raises(ValueError, match=r"returned shape \(12, 1\)"):
        GaussianProcess(RBF(), noise=NOISE, mean_function=column).condition(X, y)
    with pytest.raises(ValueError, match=r"returned shape \(12, 1\)"):
        StudentTProcess(RBF(), noise=NOISE, mean_function=column).fit(X, y, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"returned shape \(\)"):
        GaussianProcess(RBF(), noise=NOISE, mean_function=lambda X: jnp.sum(X)).condition(X, y)


def test_invalid_mean_function_rejected(data):
    X, y = data
    with pytest.raises(ValueError, match="mean_function must be a callable"):
        GaussianProcess(RBF(), mean_function=np.zeros(12))
    with pytest.raises(ValueError, match=r"NaN or infinite values at rows \[0"):
        GaussianProcess(RBF(), noise=NOISE, mean_function=lambda X: jnp.log(X[:, 0] + 1.0)).condition(X, y)
