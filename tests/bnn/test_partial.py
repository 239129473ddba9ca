"""Tests of the partially stochastic network: NIG closed forms, evidence, sampling, BO loop."""

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from probnn.bnn.partial import PRECISION_GRID, PartiallyStochasticNetwork, fit_readout
from probnn.bo import BayesianOptimization, get_problem
from probnn.nets import TrainConfig
from probnn.processes import StudentTPredictive


def _smooth_data(n=12, d=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(n, d))
    y = np.sin(5.0 * X[:, 0]) + X[:, -1] ** 2 + 0.1 * rng.normal(size=n)
    return X, y


def _test_inputs(d=2, seed=1):
    # Five rows everywhere, so the tests share compiled prediction programs.
    return np.random.default_rng(seed).uniform(size=(5, d))


@pytest.fixture(scope="module")
def fitted():
    X, y = _smooth_data()
    posterior = PartiallyStochasticNetwork().fit(X, y, key=jax.random.key(0))
    return X, y, posterior


def _numpy_log_evidence(Phi, z, precision, shape, rate):
    """Log evidence of the NIG linear model, from the normal equations in numpy."""
    n, p = Phi.shape
    precision_matrix = Phi.T @ Phi + precision * np.eye(p)
    mean = np.linalg.solve(precision_matrix, Phi.T @ z)
    rate_n = rate + 0.5 * (z @ z - mean @ precision_matrix @ mean)
    shape_n = shape + 0.5 * n
    _, log_det = np.linalg.slogdet(precision_matrix)
    return (
        -0.5 * n * np.log(2 * np.pi)
        + 0.5 * p * np.log(precision)
        - 0.5 * log_det
        + shape * np.log(rate)
        - shape_n * np.log(rate_n)
        + scipy.special.gammaln(shape_n)
        - scipy.special.gammaln(shape)
    )


def test_predictive_matches_numpy_bayesian_linear_regression(fitted):
    X, y, posterior = fitted
    X_new = _test_inputs()
    readout = posterior.readout
    Phi = np.asarray(posterior.model.design_matrix(jnp.asarray(X)))
    Phi_new = np.asarray(posterior.model.design_matrix(jnp.asarray(X_new)))
    z = (y - y.mean()) / y.std()
    precision, shape, rate = float(readout.prior_precision), float(readout.prior_shape), float(readout.prior_rate)

    precision_matrix = Phi.T @ Phi + precision * np.eye(Phi.shape[1])
    mean = np.linalg.solve(precision_matrix, Phi.T @ z)
    shape_n = shape + 0.5 * len(y)
    rate_n = rate + 0.5 * (z @ z - mean @ precision_matrix @ mean)
    quadratic = np.sum(Phi_new * np.linalg.solve(precision_matrix, Phi_new.T).T, axis=1)

    for latent, extra in ((False, 1.0), (True, 0.0)):
        predictive = posterior.predict(X_new, latent=latent)
        assert isinstance(predictive, StudentTPredictive)
        np.testing.assert_allclose(predictive.df, 2 * shape + len(y))
        np.testing.assert_allclose(predictive.loc, Phi_new @ mean * y.std() + y.mean(), rtol=1e-8)
        expected_scale = np.sqrt(rate_n / shape_n * (quadratic + extra)) * y.std()
        np.testing.assert_allclose(predictive.scale, expected_scale, rtol=1e-7)


def test_evidence_matches_multivariate_student_t(fitted):
    X, y, posterior = fitted
    readout = posterior.readout
    Phi = np.asarray(posterior.model.design_matrix(jnp.asarray(X)))
    z = (y - y.mean()) / y.std()
    precision, shape, rate = float(readout.prior_precision), float(readout.prior_shape), float(readout.prior_rate)
    # Marginally y ~ t_{2 a0}(0, (b0 / a0) (I + Phi Phi^T / lambda)).
    covariance_shape = rate / shape * (np.eye(len(y)) + Phi @ Phi.T / precision)
    expected = scipy.stats.multivariate_t(loc=np.zeros(len(y)), shape=covariance_shape, df=2 * shape).logpdf(z)
    np.testing.assert_allclose(readout.log_evidence, expected, rtol=1e-8)
    # On the original scale the density picks up the Jacobian 1 / std(y) per point.
    np.testing.assert_allclose(posterior.log_evidence(), expected - len(y) * np.log(y.std()), rtol=1e-8)


def test_evidence_maximised_over_precision_and_rate():
    rng = np.random.default_rng(2)
    Phi = np.concatenate([np.tanh(rng.normal(size=(20, 6))), np.ones((20, 1))], axis=1)
    y = Phi @ rng.normal(size=7) * 0.5 + 0.3 * rng.normal(size=20)
    readout, result = fit_readout(jnp.asarray(Phi), jnp.asarray(y), 20, 2.0)
    assert bool(result.success)
    precision, rate = float(readout.prior_precision), float(readout.prior_rate)

    def profile(precision):
        # The closed-form optimal rate for this precision, b0 = a0 R / n.
        precision_matrix = Phi.T @ Phi + precision * np.eye(7)
        mean = np.linalg.solve(precision_matrix, Phi.T @ y)
        residual = y @ y - mean @ precision_matrix @ mean
        return _numpy_log_evidence(Phi, y, precision, 2.0, 2.0 * residual / 20)

    grid_values = [profile(value) for value in PRECISION_GRID]
    assert precision == PRECISION_GRID[int(np.argmax(grid_values))]
    # The data favour an interior precision, so the grid does not just return an end point.
    assert PRECISION_GRID[0] < precision < PRECISION_GRID[-1]
    best = _numpy_log_evidence(Phi, y, precision, 2.0, rate)
    np.testing.assert_allclose(readout.log_evidence, best, rtol=1e-9)
    for factor in (0.95, 1.05):
        assert _numpy_log_evidence(Phi, y, precision, 2.0, factor * rate) < best


def test_padded_rows_change_nothing():
    rng = np.random.default_rng(3)
    Phi = np.concatenate([np.tanh(rng.normal(size=(9, 4))), np.ones((9, 1))], axis=1)
    y = rng.normal(size=9)
    plain, _ = fit_readout(jnp.asarray(Phi), jnp.asarray(y), 9, 3.0)
    padded, _ = fit_readout(
        jnp.asarray(np.concatenate([Phi, np.zeros((7, 5))])), jnp.asarray(np.concatenate([y, np.zeros(7)])), 9, 3.0
    )
    for name in ("mean", "shape", "rate", "prior_precision", "prior_rate", "log_evidence"):
        np.testing.assert_allclose(getattr(padded, name), getattr(plain, name), rtol=1e-9, err_msg=name)


def test_sample_functions_match_predictive(fitted):
    _, _, posterior = fitted
    X_new = _test_inputs()
    draws = np.asarray(posterior.sample_functions(jax.random.key(4), X_new, 40000))
    assert draws.shape == (40000, 5)
    predictive = posterior.predict(X_new, latent=True)
    df = float(predictive.df[0])
    std = np.asarray(predictive.scale) * np.sqrt(df / (df - 2.0))
    # Five standard errors: a false failure has probability below 1e-5 per point.
    assert np.all(np.abs(draws.mean(axis=0) - predictive.loc) < 5 * std / np.sqrt(draws.shape[0]))
    np.testing.assert_allclose(draws.std(axis=0), std, rtol=0.03)
    # Joint draws: the covariance is (b_n / a_n) Phi* Lambda_n^{-1} Phi*^T df / (df - 2).
    readout = posterior.readout
    Phi_new = np.asarray(posterior.model.design_matrix(jnp.asarray(X_new)))
    factor = np.asarray(readout.cholesky_factor)
    solved = np.linalg.solve(factor, Phi_new.T)
    covariance = float(readout.rate / readout.shape) * solved.T @ solved * df / (df - 2.0) * float(posterior.y_scale) ** 2
    np.testing.assert_allclose(np.cov(draws.T), covariance, atol=0.05 * np.max(np.diag(covariance)))


def test_warm_start_continues_from_previous_body(fitted):
    X, y, posterior = fitted
    X_more = np.concatenate([X, _test_inputs()[:1]])
    y_more = np.concatenate([y, [0.0]])
    warm = posterior.model.fit(X_more, y_more, key=jax.random.key(1), num_restarts=1)
    fresh = posterior.model.fit(X_more, y_more, key=jax.random.key(1))

    def distance(a, b):
        return float(np.linalg.norm(np.asarray(a.model.body.weights[0]) - np.asarray(b.model.body.weights[0])))

    # The warm fit refines the previous body; a fresh fit starts from a new initialisation.
    assert distance(warm, posterior) < 0.25 * distance(fresh, posterior)


def test_prediction_is_jittable_and_differentiable(fitted):
    _, _, posterior = fitted
    X_new = jnp.asarray(_test_inputs())

    @jax.jit
    def location(posterior, X_new):
        return posterior.predict(X_new, latent=True).loc

    np.testing.assert_allclose(location(posterior, X_new), posterior.predict(X_new, latent=True).loc, rtol=1e-6)
    assert location(posterior, X_new).dtype == jnp.float64
    gradient = jax.grad(lambda x: jnp.sum(posterior.predict(x, latent=True).scale))(X_new)
    assert gradient.shape == (5, 2)
    assert np.all(np.isfinite(gradient))


def test_invalid_settings_rejected(fitted):
    with pytest.raises(ValueError, match="noise_shape"):
        PartiallyStochasticNetwork(noise_shape=0.0)
    with pytest.raises(ValueError, match="precision_grid"):
        PartiallyStochasticNetwork(precision_grid=[1.0, -1.0])
    with pytest.raises(ValueError, match="validation_fraction"):
        PartiallyStochasticNetwork(config=TrainConfig(validation_fraction=0.2))
    with pytest.raises(ValueError, match="widths"):
        PartiallyStochasticNetwork(widths=(0,))
    X, y, posterior = fitted
    with pytest.raises(ValueError, match="key"):
        PartiallyStochasticNetwork().fit(X, y, key=None)
    with pytest.raises(ValueError, match="fit first"):
        PartiallyStochasticNetwork().condition(X, y)
    with pytest.raises(ValueError, match="columns"):
        posterior.predict(np.zeros((3, 4)))


def test_bayesian_optimization_with_partial_on_branin():
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    problem = get_problem("branin")
    loop = BayesianOptimization(problem.bounds, surrogate="partial", num_initial=4, seed=0)
    # Fits 0 and 5 are full fits and 1-4 warm ones, so both programs are compiled by n = 11.
    _run(loop, problem, 11)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        _run(loop, problem, 15)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    assert loop.best_value - problem.optimum < 5.0


def _run(loop, objective, total):
    while loop.num_evaluations < total:
        x = loop.ask()
        loop.tell(x, objective(x))
