r"""Closed forms of the Student-t process, checked against independent numpy and numpyro code.

Hyperparameters are fixed (``condition`` or ``log_marginal_likelihood``), so no fitting
enters. The reference is the joint multivariate Student-t of training and test values,
with ``nu = 2 alpha`` degrees of freedom and shape ``Sigma = (beta / alpha) (K + noise I)``.
Given ``n`` training values ``y``, the test block is Student-t with ``nu + n`` degrees of
freedom and the Gaussian conditional mean as location. Its shape is
``(nu + y^T Sigma_11^{-1} y) / (nu + n) * (Sigma_22 - Sigma_21 Sigma_11^{-1} Sigma_12)``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.linalg

from probnn.kernels import NNGP, RBF
from probnn.processes import GaussianProcess, StudentTProcess, StudentTPredictive

LENGTHSCALE = 0.7
KERNEL_VARIANCE = 1.3

# (alpha, beta, noise) cases; alpha <= 1 is allowed because the scale prior is fixed.
PRIOR_CASES = [(3.0, 2.0, 0.1), (1.5, 0.5, 0.01), (10.0, 25.0, 1.0), (0.8, 1.0, 0.05)]


def rbf_numpy(A, B, lengthscale=LENGTHSCALE, variance=KERNEL_VARIANCE):
    """Squared-exponential kernel written directly in numpy."""
    squared_distance = np.sum((A[:, None, :] - B[None, :, :]) ** 2, axis=-1) / lengthscale**2
    return variance * np.exp(-0.5 * squared_distance)


@jax.jit
def numpyro_t_log_density(df, scale_tril, y):
    """Log density of ``MultivariateStudentT(df, 0, scale_tril)`` at ``y``, compiled once."""
    reference = dist.MultivariateStudentT(df=df, loc=jnp.zeros(y.shape[0]), scale_tril=scale_tril)
    return reference.log_prob(y)


def standardize(y):
    """Return the standardised targets, their mean and their (ddof 0) standard deviation."""
    mean = float(np.mean(y))
    scale = float(np.std(y))
    return (y - mean) / scale, mean, scale


def conditional_t(joint_shape, y, df):
    """Condition a zero-mean multivariate t on its first ``len(y)`` coordinates.

    Returns the conditional degrees of freedom, location and shape matrix of the rest.
    """
    n = y.shape[0]
    S11 = joint_shape[:n, :n]
    S12 = joint_shape[:n, n:]
    S22 = joint_shape[n:, n:]
    factor = scipy.linalg.cho_factor(S11, lower=True)
    location = S12.T @ scipy.linalg.cho_solve(factor, y)
    mahalanobis = y @ scipy.linalg.cho_solve(factor, y)
    shape = (df + mahalanobis) / (df + n) * (S22 - S12.T @ scipy.linalg.cho_solve(factor, S12))
    return df + n, location, shape


def expected_predictive(X, y, X_new, alpha, beta, noise, latent):
    """Student-t predictive at ``X_new`` on the original scale, from the joint (n + m) shape matrix.

    The process standardises ``y``, and its noise variance is on that scale, so the
    conditional is taken for the standardised targets and mapped back by
    ``loc -> mean + scale * loc`` and ``scale -> scale * scale``.
    """
    y_standardized, y_mean, y_scale = standardize(y)
    n = X.shape[0]
    Z = np.concatenate([X, X_new])
    noise_diagonal = np.full(Z.shape[0], noise)
    if latent:
        noise_diagonal[n:] = 0.0
    joint_shape = beta / alpha * (rbf_numpy(Z, Z) + np.diag(noise_diagonal))
    df, location, shape = conditional_t(joint_shape, y_standardized, 2.0 * alpha)
    return df, y_mean + y_scale * location, y_scale * np.sqrt(np.diag(shape)), y_scale**2 * shape


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1.0, 1.0, (10, 2))
    y = 3.0 * np.sin(3.0 * X[:, 0]) + X[:, 1] + 5.0 + 0.1 * rng.standard_normal(10)
    X_new = np.array([[-0.9, 0.8], [-0.2, -0.3], [0.1, 0.6], [0.7, -0.8], [1.5, 1.5]])
    return X, y, X_new


def make_process(alpha, beta, noise):
    kernel = RBF(lengthscale=LENGTHSCALE, variance=KERNEL_VARIANCE)
    return StudentTProcess(kernel, alpha=alpha, beta=beta, noise=noise, learn_scale_prior=False)


@pytest.mark.parametrize("kernel_name", ["nngp", "rbf"])
@pytest.mark.parametrize("alpha, beta, noise", PRIOR_CASES)
def test_log_marginal_matches_numpyro(data, kernel_name, alpha, beta, noise):
    X, y, _ = data
    if kernel_name == "nngp":
        kernel = NNGP(depth=2, bias_variance=0.2, variance=KERNEL_VARIANCE)
    else:
        kernel = RBF(lengthscale=LENGTHSCALE, variance=KERNEL_VARIANCE)
    model = StudentTProcess(kernel, alpha=alpha, beta=beta, noise=noise, learn_scale_prior=False)

    K = np.asarray(jax.jit(lambda k, x: k.gram(x))(kernel, jnp.asarray(X)))
    shape = beta / alpha * (K + noise * np.eye(X.shape[0]))
    scale_tril = jnp.asarray(np.linalg.cholesky(shape))
    expected = float(numpyro_t_log_density(2.0 * alpha, scale_tril, jnp.asarray(y)))

    actual = float(model.log_marginal_likelihood(X, y))
    assert abs(actual - expected) <= 1e-10 * abs(expected)


@pytest.mark.parametrize("alpha, beta, noise", PRIOR_CASES)
def test_predictive_matches_conditional(data, alpha, beta, noise):
    X, y, X_new = data
    posterior = make_process(alpha, beta, noise).condition(X, y)

    for latent in (False, True):
        predictive = posterior.predict(X_new, latent=latent)
        df, loc, scale, _ = expected_predictive(X, y, X_new, alpha, beta, noise, latent)
        assert isinstance(predictive, StudentTPredictive)
        np.testing.assert_allclose(predictive.df, df, rtol=1e-12)
        np.testing.assert_allclose(predictive.loc, loc, rtol=1e-10)
        np.testing.assert_allclose(predictive.scale, scale, rtol=1e-9)


def test_predictive_latent_excludes_noise(data):
    X, y, X_new = data
    alpha, beta, noise = 3.0, 2.0, 0.1
    posterior = make_process(alpha, beta, noise).condition(X, y)
    noisy = posterior.predict(X_new)
    latent = posterior.predict(X_new, latent=True)
    _, _, y_scale = standardize(y)

    # Squared scales differ by the noise variance, times the posterior scale factor
    # (2 beta + q) / (2 alpha + n), mapped to the original scale.
    noise_term = float(posterior.scale_factor) * noise * y_scale**2
    np.testing.assert_allclose(noisy.scale**2 - latent.scale**2, noise_term, rtol=1e-8)
    np.testing.assert_allclose(latent.loc, noisy.loc, rtol=1e-14)
    assert np.all(latent.scale < noisy.scale)


def test_predictive_affine_targets(data):
    """Conditioning on ``a y + c`` gives location ``a loc + c`` and scale ``|a| scale``."""
    X, y, X_new = data
    a, c = -250.0, 2.0e4
    model = make_process(3.0, 2.0, 0.1)
    base = model.condition(X, y).predict(X_new)
    mapped = model.condition(X, a * y + c).predict(X_new)

    np.testing.assert_allclose(mapped.loc, a * base.loc + c, rtol=1e-12)
    np.testing.assert_allclose(mapped.scale, abs(a) * base.scale, rtol=1e-10)
    np.testing.assert_allclose(mapped.df, base.df, rtol=1e-14)


def test_large_alpha_tends_to_gaussian(data):
    r"""With beta = alpha the prior on the scale concentrates at 1, so the t predictive tends to the GP's.

    The squared scale is the GP variance times ``(2 alpha + q) / (2 alpha + n)``, so the
    relative scale error is about ``|q - n| / (4 alpha)``, which is below 1e-5 at alpha = 1e6
    for these data because q is of order n. The location is the same Gaussian
    conditional mean.
    """
    X, y, X_new = data
    noise = 0.1
    kernel = RBF(lengthscale=LENGTHSCALE, variance=KERNEL_VARIANCE)
    gaussian = GaussianProcess(kernel, noise=noise).condition(X, y).predict(X_new)
    _, _, y_scale = standardize(y)

    alphas = [1e1, 1e2, 1e3, 1e4, 1e6]
    scale_errors = []
    variance_errors = []
    for alpha in alphas:
        student = make_process(alpha, alpha, noise).condition(X, y).predict(X_new)
        np.testing.assert_allclose(student.loc, gaussian.loc, rtol=0.0, atol=1e-10 * y_scale)
        scale_errors.append(float(np.max(np.abs(student.scale / gaussian.scale - 1.0))))
        variance_errors.append(float(np.max(np.abs(student.variance / gaussian.variance - 1.0))))

    assert all(later < earlier for earlier, later in zip(scale_errors, scale_errors[1:]))
    assert all(later < earlier for earlier, later in zip(variance_errors, variance_errors[1:]))
    assert scale_errors[-1] < 1e-5
    assert variance_errors[-1] < 1e-5
    assert float(make_process(1e6, 1e6, noise).condition(X, y).predict(X_new).df[0]) > 1e6


@pytest.mark.parametrize("alpha, beta, noise", PRIOR_CASES)
def test_scale_posterior_inverse_gamma(data, alpha, beta, noise):
    X, y, _ = data
    posterior = make_process(alpha, beta, noise).condition(X, y)
    y_standardized, _, _ = standardize(y)
    A = rbf_numpy(X, X) + noise * np.eye(X.shape[0])
    quadratic = y_standardized @ np.linalg.solve(A, y_standardized)
    n = X.shape[0]

    scale_posterior = posterior.scale_posterior()
    assert isinstance(scale_posterior, dist.InverseGamma)
    np.testing.assert_allclose(scale_posterior.concentration, alpha + n / 2.0, rtol=1e-14)
    np.testing.assert_allclose(scale_posterior.rate, beta + quadratic / 2.0, rtol=1e-10)


def test_sample_functions_moments(data):
    """Joint draws of the latent function have the predictive mean and covariance.

    The covariance of a multivariate t is its shape times ``df / (df - 2)``. Each sample
    mean and covariance entry must lie within 6 standard errors (estimated from the
    draws) of the closed form. With alpha = 3 and n = 10 the draws have 16 degrees of
    freedom, so fourth moments exist and the sample moments are asymptotically normal.
    For the 4 + 10 compared statistics a random key would then fail with probability
    about 3e-8 (an estimate from that normal approximation). The key is fixed, so the
    test is deterministic.
    """
    X, y, X_new = data
    X_new = X_new[:4]
    alpha, beta, noise = 3.0, 2.0, 0.1
    posterior = make_process(alpha, beta, noise).condition(X, y)
    num_samples = 20_000

    draws = np.asarray(posterior.sample_functions(jax.random.key(1), X_new, num_samples))
    assert draws.shape == (num_samples, X_new.shape[0])
    assert np.all(np.isfinite(draws))

    df, loc, _, shape = expected_predictive(X, y, X_new, alpha, beta, noise, latent=True)
    covariance = shape * df / (df - 2.0)

    sample_mean = draws.mean(axis=0)
    mean_error = draws.std(axis=0) / np.sqrt(num_samples)
    assert np.all(np.abs(sample_mean - loc) < 6.0 * mean_error)

    centred = draws - sample_mean
    products = centred[:, :, None] * centred[:, None, :]
    sample_covariance = products.mean(axis=0)
    covariance_error = products.std(axis=0) / np.sqrt(num_samples)
    upper = np.triu_indices(X_new.shape[0])
    assert np.all(np.abs(sample_covariance - covariance)[upper] < 6.0 * covariance_error[upper])


def test_predictive_icdf_matches_scipy():
    """The Student-t quantile uses SciPy's stdtrit, also under jit."""
    import scipy.stats

    predictive = StudentTPredictive(jnp.array([3.5, 40.0]), jnp.array([1.0, -2.0]), jnp.array([0.5, 2.0]))
    q = jnp.array([0.025, 0.9])
    expected = scipy.stats.t.ppf(np.asarray(q), df=[3.5, 40.0], loc=[1.0, -2.0], scale=[0.5, 2.0])
    np.testing.assert_allclose(predictive.icdf(q), expected, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(lambda p, q: p.icdf(q))(predictive, q), expected, rtol=1e-12)
