"""Exact processes on degenerate, badly scaled or invalid data."""

import os
import re
import subprocess
import sys
import textwrap
import warnings

import jax
import numpy as np
import pytest

from probnn.kernels import NNGP, RBF, NumericalWarning
from probnn.processes import GaussianProcess, StudentTProcess

# Few restarts and iterations keep the fits fast. Every fit below uses 1-d inputs and at
# most 16 points (one padding bucket), so each model configuration compiles its fit program once.
FAST_FIT = {"num_restarts": 2, "max_iterations": 50}
X_GRID = np.linspace(-0.2, 1.2, 15)[:, None]


def fit_recording_warnings(model, X, y, seed=0):
    """Fit ``model`` and return the posterior with the list of warnings raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        posterior = model.fit(X, y, key=jax.random.key(seed))
    return posterior, caught


def assert_finite_predictions(posterior, X_new=X_GRID):
    """Check that predictive means and variances are finite and the scales positive.

    A variance may be exactly 0 without noise, at a training input.
    """
    for latent in (False, True):
        predictive = posterior.predict(X_new, latent=latent)
        assert np.all(np.isfinite(predictive.mean))
        assert np.all(np.isfinite(predictive.variance))
        assert np.all(predictive.variance >= 0.0)
        assert np.all(predictive.scale > 0.0)


def jitter_messages(caught):
    """Return the messages of the NumericalWarnings in ``caught`` that state a jitter value."""
    messages = [str(w.message) for w in caught if issubclass(w.category, NumericalWarning)]
    return [m for m in messages if re.search(r"jitter \d\.\d+e[-+]\d+", m)]


# -- repeated inputs -------------------------------------------------------------------


@pytest.fixture(scope="module")
def duplicate_data():
    """Five copies of x = 0.3 plus six distinct points, with noise-free targets sin(6x)."""
    X = np.concatenate([np.full(5, 0.3), np.linspace(0.0, 1.0, 6)])[:, None]
    return X, np.sin(6.0 * X[:, 0])


@pytest.fixture(scope="module")
def noise_free_fit(duplicate_data):
    model = GaussianProcess(RBF(), noise=0.0, noise_lower_bound=0.0, **FAST_FIT)
    return fit_recording_warnings(model, *duplicate_data)


def test_duplicates_noise_free_fit(noise_free_fit, duplicate_data):
    """Fitting succeeds, moves the hyperparameters, keeps the noise at 0 and interpolates."""
    posterior, caught = noise_free_fit
    messages = [str(w.message) for w in caught]
    assert not any("no finite marginal likelihood" in m for m in messages), messages
    assert float(posterior.model.kernel.lengthscale[0]) != 1.0
    assert float(posterior.model.noise) == 0.0
    assert_finite_predictions(posterior)

    X, y = duplicate_data
    np.testing.assert_allclose(posterior.predict(X, latent=True).mean, y, atol=1e-5)


def test_duplicates_noise_free_fit_warns(noise_free_fit):
    """The Gram matrix of repeated inputs without noise is singular, so fit warns with the jitter."""
    _, caught = noise_free_fit
    assert jitter_messages(caught), [str(w.message) for w in caught]


def test_duplicates_noise_free_condition_warns(duplicate_data):
    """Conditioning with lengthscale 1 needs jitter on the diagonal and warns with its value."""
    model = GaussianProcess(RBF(), noise=0.0, noise_lower_bound=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        posterior = model.condition(*duplicate_data)
    assert jitter_messages(caught), [str(w.message) for w in caught]
    assert_finite_predictions(posterior)


def test_duplicates_default_noise(duplicate_data):
    """With the learned noise and its default lower bound the same data fit without error."""
    posterior, _ = fit_recording_warnings(GaussianProcess(RBF(), **FAST_FIT), *duplicate_data)
    assert float(posterior.model.noise) >= 1e-6
    assert_finite_predictions(posterior)


def test_zero_noise_default_bound_warns():
    """noise=0.0 with the default lower bound warns and uses the bound 1e-6."""
    with pytest.warns(NumericalWarning, match="noise_lower_bound"):
        model = GaussianProcess(RBF(), noise=0.0)
    assert float(model.noise) == 1e-6


# -- precision -------------------------------------------------------------------------


def test_float32_data_warns():
    """float32 data are converted to float64 with a warning naming float32, and fit as usual."""
    X = np.linspace(0.0, 1.0, 12, dtype=np.float32)[:, None]
    y = np.sin(6.0 * X[:, 0])
    assert y.dtype == np.float32
    with pytest.warns(NumericalWarning, match="float32"):
        posterior = GaussianProcess(RBF(), **FAST_FIT).fit(X, y, key=jax.random.key(0))
    assert posterior.data.X.dtype == np.float64
    assert_finite_predictions(posterior)
    np.testing.assert_allclose(posterior.predict(X).mean, y, atol=0.05)


def test_import_keeps_x64_setting():
    """Importing probnn in a fresh interpreter leaves JAX's float64 mode off."""
    script = textwrap.dedent(
        """
        import jax
        before = jax.config.read("jax_enable_x64")
        import probnn, probnn.kernels, probnn.processes
        print(before, jax.config.read("jax_enable_x64"))
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "JAX_ENABLE_X64"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


# -- badly scaled targets --------------------------------------------------------------


@pytest.fixture(scope="module")
def large_targets():
    """Targets 20000 + 3000 sin(6x) at 14 points in [0, 1], and the truth at 15 test points.

    Seven test points are training inputs, where cancellation in ``k** - k*^T A^{-1} k*``
    is worst, and the other eight lie between them.
    """
    X = np.linspace(0.0, 1.0, 14)[:, None]
    X_new = np.sort(np.concatenate([X[::2, 0], np.linspace(0.03, 0.97, 8)]))[:, None]
    return X, 20_000.0 + 3_000.0 * np.sin(6.0 * X[:, 0]), X_new, 20_000.0 + 3_000.0 * np.sin(6.0 * X_new[:, 0])


@pytest.fixture(scope="module")
def student_t_large_fit(large_targets):
    X, y, _, _ = large_targets
    return StudentTProcess(RBF(), **FAST_FIT).fit(X, y, key=jax.random.key(0))


@pytest.mark.parametrize("model_name", ["gaussian", "student_t"])
def test_large_targets_original_scale(large_targets, student_t_large_fit, model_name):
    """Predictions are within 1% of the 3000 spread of the truth, and variances are never negative."""
    X, y, X_new, truth = large_targets
    if model_name == "gaussian":
        posterior = GaussianProcess(RBF(), **FAST_FIT).fit(X, y, key=jax.random.key(0))
    else:
        posterior = student_t_large_fit

    predictive = posterior.predict(X_new)
    assert np.max(np.abs(predictive.mean - truth)) < 30.0
    for latent in (False, True):
        variance = posterior.predict(X_new, latent=latent).variance
        assert np.all(np.isfinite(variance))
        assert np.all(variance >= 0.0)
    # The predictive standard deviation is on the target scale, far below the spread.
    assert np.all(np.sqrt(predictive.variance) < 300.0)


def test_student_t_learned_alpha_above_one(student_t_large_fit):
    assert float(student_t_large_fit.model.alpha) > 1.0
    assert float(student_t_large_fit.degrees_of_freedom) > 2.0


# -- shapes ----------------------------------------------------------------------------


def test_column_targets_accepted():
    """y of shape (n, 1) and X of shape (n,) give the same posterior as (n,) and (n, 1)."""
    X = np.linspace(0.0, 1.0, 9)
    y = np.cos(4.0 * X)
    model = GaussianProcess(RBF(), noise=0.01)
    reference = model.condition(X[:, None], y).predict(X_GRID)
    for X_form, y_form in [(X[:, None], y[:, None]), (X, y), (X, y[:, None])]:
        predictive = model.condition(X_form, y_form).predict(X_GRID)
        np.testing.assert_allclose(predictive.mean, reference.mean, rtol=1e-14)
        np.testing.assert_allclose(predictive.variance, reference.variance, rtol=1e-14)


def call_method(method, X, y):
    model = GaussianProcess(RBF(), noise=0.01)
    if method == "fit":
        return model.fit(X, y, key=jax.random.key(0))
    return getattr(model, method)(X, y)


METHODS = ["fit", "condition", "log_marginal_likelihood"]


@pytest.mark.parametrize("method", METHODS)
def test_mismatched_rows_raise(method):
    with pytest.raises(ValueError) as error:
        call_method(method, np.zeros((5, 1)), np.zeros(4))
    assert "(5, 1)" in str(error.value)
    assert "(4,)" in str(error.value)


@pytest.mark.parametrize("method", METHODS)
def test_two_column_targets_raise(method):
    with pytest.raises(ValueError) as error:
        call_method(method, np.zeros((5, 1)), np.zeros((5, 2)))
    assert "(5, 2)" in str(error.value)
    assert "(5, 1)" in str(error.value)


@pytest.mark.parametrize("method", METHODS)
def test_three_dim_inputs_raise(method):
    with pytest.raises(ValueError, match=re.escape("(5, 1, 1)")):
        call_method(method, np.zeros((5, 1, 1)), np.zeros(5))


def test_three_dim_inputs_message_names_y():
    with pytest.raises(ValueError, match=re.escape("(5,)")):
        call_method("fit", np.zeros((5, 1, 1)), np.zeros(5))


# -- Student-t degrees of freedom ------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.5, 0.9, 1.0])
def test_student_t_small_alpha_variance_raises(alpha):
    """With 2 alpha <= 2 degrees of freedom and no data the predictive variance does not exist."""
    model = StudentTProcess(RBF(), alpha=alpha, beta=1.0, noise=0.1, learn_scale_prior=False)
    predictive = model.fit(np.zeros((0, 1)), np.zeros(0)).predict(X_GRID)
    np.testing.assert_allclose(predictive.df, 2.0 * alpha)
    with pytest.raises(ValueError, match="degrees of freedom"):
        predictive.variance


def test_student_t_learned_small_alpha_raises():
    with pytest.raises(ValueError, match="alpha"):
        StudentTProcess(RBF(), alpha=0.9)


# -- zero, one and constant observations -----------------------------------------------


def test_zero_observations_prior_predictive():
    """With no data the posterior is the prior: mean 0, variance k(x, x) + noise."""
    X_new = np.random.default_rng(5).uniform(-2.0, 2.0, (6, 2))
    kernel = NNGP(depth=2, variance=1.3)
    model = GaussianProcess(kernel)
    posterior = model.fit(np.zeros((0, 2)), np.zeros(0))
    prior_variance = np.asarray(kernel.diag(X_new))
    noise = float(model.noise)

    assert posterior.num_data == 0
    predictive = posterior.predict(X_new)
    np.testing.assert_array_equal(predictive.mean, 0.0)
    np.testing.assert_allclose(predictive.variance, prior_variance + noise, rtol=1e-12)
    np.testing.assert_allclose(posterior.predict(X_new, latent=True).variance, prior_variance, rtol=1e-12)


def test_zero_observations_student_t_prior():
    """With no data the Student-t predictive has 2 alpha degrees of freedom and shape (beta / alpha)(k + noise)."""
    alpha, beta, noise = 3.0, 2.0, 0.1
    model = StudentTProcess(RBF(variance=1.3), alpha=alpha, beta=beta, noise=noise)
    predictive = model.fit(np.zeros((0, 2)), np.zeros(0)).predict(np.zeros((3, 2)))
    np.testing.assert_array_equal(predictive.loc, 0.0)
    np.testing.assert_allclose(predictive.df, 2.0 * alpha)
    np.testing.assert_allclose(predictive.scale**2, beta / alpha * (1.3 + noise), rtol=1e-12)


@pytest.mark.parametrize("model_class", [GaussianProcess, StudentTProcess])
def test_one_observation_finite(model_class):
    posterior, _ = fit_recording_warnings(model_class(RBF(), **FAST_FIT), np.array([[0.4]]), np.array([2.5]))
    assert posterior.num_data == 1
    assert_finite_predictions(posterior)


def test_constant_targets_predict_constant():
    """Constant targets warn and give the constant as the mean everywhere."""
    X = np.linspace(0.0, 1.0, 8)[:, None]
    with pytest.warns(NumericalWarning, match="3.7"):
        posterior = GaussianProcess(RBF(), **FAST_FIT).fit(X, np.full(8, 3.7), key=jax.random.key(0))
    predictive = posterior.predict(X_GRID)
    np.testing.assert_allclose(predictive.mean, 3.7, rtol=1e-14)
    assert np.all(np.isfinite(predictive.variance))
    assert np.all(predictive.variance > 0.0)


# -- invalid values --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fit", "condition"])
def test_nan_inputs_name_rows(method):
    X = np.linspace(0.0, 1.0, 8)[:, None]
    X[[2, 5], 0] = np.nan
    with pytest.raises(ValueError, match=re.escape("rows [2, 5]")):
        call_method(method, X, np.sin(np.arange(8.0)))


@pytest.mark.parametrize("method", ["fit", "condition"])
def test_nan_targets_name_rows(method):
    y = np.sin(np.arange(8.0))
    y[3] = np.nan
    with pytest.raises(ValueError, match=re.escape("rows [3]")):
        call_method(method, np.linspace(0.0, 1.0, 8)[:, None], y)


def test_fit_without_key_raises():
    X = np.linspace(0.0, 1.0, 8)[:, None]
    with pytest.raises(ValueError, match="pass a key"):
        GaussianProcess(RBF(), num_restarts=3).fit(X, np.sin(6.0 * X[:, 0]))
