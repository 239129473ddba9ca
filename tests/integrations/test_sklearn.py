"""Tests of the scikit-learn regressors: agreement with the models, pipelines, pickling, bad input."""

import pickle

import jax
import numpy as np
import pytest
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from probnn.integrations.sklearn import BNNRegressor, PFNRegressor, ProcessRegressor
from probnn.processes.registry import make_regression_model


def _smooth_data(n=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 2.0, size=(n, d))
    y = np.sin(3.0 * X[:, 0]) + 0.5 * X[:, 1] + 0.05 * rng.normal(size=n)
    return X, y


@pytest.fixture(scope="module")
def fitted_gp():
    X, y = _smooth_data()
    return X, y, ProcessRegressor("gp-rbf", num_restarts=1).fit(X, y)


def test_process_regressor_matches_direct_fit(fitted_gp):
    X, y, regressor = fitted_gp
    X_new = _smooth_data(n=7, seed=1)[0]
    center, scale = X.mean(axis=0), X.std(axis=0)
    posterior = make_regression_model("gp-rbf", 3, num_restarts=1).fit((X - center) / scale, y, key=jax.random.key(0))
    predictive = posterior.predict((X_new - center) / scale)

    mean, std = regressor.predict(X_new, return_std=True)
    np.testing.assert_allclose(mean, np.asarray(predictive.mean), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(std, np.sqrt(np.asarray(predictive.variance)), rtol=1e-10)
    assert mean.dtype == np.float64
    assert mean.shape == (7,)


@pytest.mark.slow
def test_sparse_approximation_matches_fit_large_and_pickles():
    from probnn.processes.large import fit_large
    from probnn.processes.sparse import SparsePosterior

    X, y = _smooth_data(n=150)
    regressor = ProcessRegressor("gp-rbf", num_restarts=1, approximation="sparse", num_inducing=12, max_fit_points=100)
    regressor.fit(X, y)
    assert isinstance(regressor.posterior_, SparsePosterior)
    assert regressor.posterior_.num_data == 150
    center, scale = X.mean(axis=0), X.std(axis=0)
    with jax.enable_x64(True):
        posterior = fit_large(
            make_regression_model("gp-rbf", 3, num_restarts=1), (X - center) / scale, y, key=jax.random.key(0),
            approximation="sparse", num_inducing=12, max_fit_points=100, seed=0,
        )
        expected = np.asarray(posterior.predict((X[:5] - center) / scale).mean)
    mean, std = regressor.predict(X[:5], return_std=True)
    np.testing.assert_allclose(mean, expected, rtol=1e-10, atol=1e-12)
    assert np.all(std > 0.0)
    restored = pickle.loads(pickle.dumps(regressor))
    np.testing.assert_allclose(restored.predict(X[:5]), mean, rtol=1e-12)


def test_latent_std_is_below_observation_std(fitted_gp):
    X, _, regressor = fitted_gp
    _, observed = regressor.predict(X[:5], return_std=True)
    _, latent = regressor.predict(X[:5], return_std=True, latent=True)
    assert np.all(latent < observed)


@pytest.mark.slow
def test_pipeline_cross_validation_scores_well():
    X, y = _smooth_data(n=60)
    scores = cross_val_score(make_pipeline(StandardScaler(), ProcessRegressor("tp-nngp", num_restarts=1)), X, y, cv=3)
    # The target is smooth with noise 0.05 against a spread of about 0.8, so a working
    # regressor explains nearly all of it. R^2 was 0.989 to 0.994 per fold.
    assert np.all(scores > 0.9)


def test_pickle_keeps_float64_without_x64(fitted_gp):
    X, _, regressor = fitted_gp
    expected = regressor.predict(X[:5])
    payload = pickle.dumps(regressor)
    # Unpickling with float64 off would rebuild JAX arrays in float32.
    with jax.enable_x64(False):
        restored = pickle.loads(payload)
    # Float32 would differ in about the seventh digit. The two float64 programs agreed to
    # a relative 1.1e-12.
    np.testing.assert_allclose(restored.predict(X[:5]), expected, rtol=1e-10)


@pytest.mark.slow
def test_bnn_regressor_fits_smooth_function():
    X, y = _smooth_data(n=30, d=2)
    regressor = BNNRegressor(widths=(16,), num_chains=2, num_warmup=100, num_samples=100, max_tree_depth=4)
    regressor.fit(X, y)
    mean, std = regressor.predict(X, return_std=True)
    assert regressor.score(X, y) > 0.8
    assert np.all(std > 0)
    assert mean.shape == (30,)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ProcessRegressor("no-such-model"), "Unknown model 'no-such-model'"),
        (lambda: ProcessRegressor(random_state=0.5), "random_state must be an integer seed"),
        (lambda: ProcessRegressor(approximation="nystrom"), "approximation must be one of"),
    ],
)
def test_bad_settings_raise_value_error(make, message):
    X, y = _smooth_data(n=10)
    with pytest.raises(ValueError, match=message):
        make().fit(X, y)


def test_bad_inputs_raise_value_error(fitted_gp):
    X, y, regressor = fitted_gp
    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ProcessRegressor("gp-rbf").fit(X_nan, y)
    with pytest.raises(ValueError, match="3 features"):
        regressor.predict(X[:, :2])


# scikit-learn's estimator checks fit dozens of small problems of different shapes, each
# compiled anew, so they take minutes. The BNN runs a small network with short chains.
@pytest.mark.slow
@parametrize_with_checks(
    [
        ProcessRegressor("gp-rbf", num_restarts=1),
        BNNRegressor(widths=(8,), num_chains=2, num_warmup=50, num_samples=50, max_tree_depth=3),
        PFNRegressor(subsample=True, reduce_features=True),
    ]
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
