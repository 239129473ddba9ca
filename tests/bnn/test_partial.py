"""Tests of the partially stochastic network: NIG closed forms, evidence, sampling, BO loop."""

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from probnn.bnn import HMCNetwork, NetworkPrior
from probnn.bnn.hmc import input_scaling
from probnn.bnn.partial import PRECISION_GRID, PartiallySampledNetwork, PartiallyStochasticNetwork, fit_readout
from probnn.bo import BayesianOptimization, get_problem
from probnn.bo.surrogates import make_surrogate
from probnn.nets import TrainConfig
from probnn.samplers import SamplerSettings
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


# -- the partially sampled network: NUTS over the last layers ---------------------------

SAMPLED_SETTINGS = SamplerSettings(kernel="hmc", num_warmup=200, num_samples=250, num_integration_steps=16)


@pytest.fixture(scope="module")
def sampled_fit():
    X, y = _smooth_data()
    prior = NetworkPrior(noise=0.3)
    model = PartiallySampledNetwork(
        widths=(8,),
        sampler=HMCNetwork(prior, SAMPLED_SETTINGS, num_chains=4, num_predictive_draws=1000),
        config=TrainConfig(learning_rate=1e-2, weight_decay=1e-4, num_steps=300),
    )
    return X, y, model.fit(X, y, key=jax.random.key(3))


def test_sampled_readout_matches_conjugate_gaussian_posterior(sampled_fit):
    # With the noise fixed, the readout on the (standardised) body features is Bayesian
    # linear regression with prior w ~ N(0, sigma_w^2 / p I), b ~ N(0, sigma_b^2), so the
    # latent predictive is Gaussian in closed form.
    X, y, posterior = sampled_fit
    model = posterior.model
    prior = model.sampler.prior
    Phi = np.asarray(model.features(jnp.asarray(X)))
    center, scale = input_scaling(Phi)
    Z = np.hstack([(Phi - center) / scale, np.ones((len(X), 1))])
    p = Phi.shape[1]
    prior_variances = np.r_[np.full(p, prior.weight_scale**2 / p), prior.bias_scale**2]
    y_mean, y_scale = y.mean(), y.std()
    z = (y - y_mean) / y_scale
    precision = Z.T @ Z / prior.noise**2 + np.diag(1.0 / prior_variances)
    covariance = np.linalg.inv(precision)
    mean = covariance @ Z.T @ z / prior.noise**2

    X_new = _test_inputs()
    Phi_new = np.asarray(model.features(jnp.asarray(X_new)))
    Z_new = np.hstack([(Phi_new - center) / scale, np.ones((len(X_new), 1))])
    exact_mean = (Z_new @ mean) * y_scale + y_mean
    exact_sd = np.sqrt(np.einsum("ij,jk,ik->i", Z_new, covariance, Z_new)) * y_scale

    draws = np.asarray(posterior.sample_functions(jax.random.key(4), X_new, 1000))
    predictive = posterior.predict(X_new, latent=True)
    # HMC on this Gaussian target gives 1,000 draws (4 chains x 250) with an effective size
    # of several hundred at least, so the standard error of the mean is under 0.05 sd and
    # that of the standard deviation under 4%. The bands are 4 standard errors or more,
    # and the largest errors seen were 0.044 sd and 3.6%.
    np.testing.assert_array_less(np.abs(np.asarray(predictive.mean) - exact_mean), 0.2 * exact_sd)
    np.testing.assert_allclose(np.asarray(predictive.variance) ** 0.5, exact_sd, rtol=0.15)
    np.testing.assert_array_less(np.abs(draws.mean(axis=0) - exact_mean), 0.2 * exact_sd)


def test_sampled_network_shapes_and_warm_start(sampled_fit):
    X, y, posterior = sampled_fit
    assert posterior.model.sampled_widths == ()
    assert posterior.model.sampler.prior.widths == ()
    X_more = np.vstack([X, _test_inputs()[:1]])
    y_more = np.r_[y, 0.5]
    warm = posterior.model.fit(X_more, y_more, key=jax.random.key(5), num_restarts=1)
    positions, _, dim = warm.model.sampler.state
    assert dim == 8
    assert np.all(np.isfinite(np.asarray(warm.predict(_test_inputs()).mean)))


@pytest.mark.slow
def test_two_sampled_layers_on_first_features():
    X, y = _smooth_data()
    model = PartiallySampledNetwork(
        widths=(8, 6),
        num_sampled_layers=2,
        sampler=HMCNetwork(NetworkPrior(), SamplerSettings(kernel="hmc", num_warmup=50, num_samples=20, num_integration_steps=8), num_chains=2),
        config=TrainConfig(num_steps=50),
    )
    assert model.num_fixed_layers == 1
    assert model.sampled_widths == (6,)
    posterior = model.fit(X, y, key=jax.random.key(0))
    assert posterior.sampled.sites["z_w0"].shape[1:] == (8, 6)
    draws = posterior.sample_functions(jax.random.key(1), _test_inputs(), 3)
    assert draws.shape == (3, 5)
    assert np.all(np.isfinite(np.asarray(draws)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_sampled_layers": 3}, "num_sampled_layers must be at most len\\(widths\\) = 2"),
        ({"num_sampled_layers": 0}, "num_sampled_layers must be a positive integer"),
        ({"sampler": "nuts"}, "sampler must be a probnn.bnn.HMCNetwork"),
        ({"config": TrainConfig(validation_fraction=0.2)}, "validation_fraction must be 0"),
    ],
)
def test_sampled_network_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PartiallySampledNetwork(**kwargs)


def test_registry_partial_hmc_is_a_sampled_readout():
    model = make_surrogate("partial-hmc", 3)
    assert isinstance(model, PartiallySampledNetwork)
    assert model.num_sampled_layers == 1
    assert model.sampler.settings.kernel == "nuts"
    assert model.sampler.prior.noise_floor > 0
