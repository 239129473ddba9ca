"""Laplace networks checked against Bayesian linear regression and dense GGN computations."""

import equinox as eqx
import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from jax.flatten_util import ravel_pytree

from probnn.bnn.laplace import LaplaceNetwork, LaplacePosterior, layer_inputs_and_gradients
from probnn.bo import BayesianOptimization, get_problem
from probnn.nets import TrainConfig

NOISE = 0.05
PRIOR = 2.0
# One small hidden layer everywhere, so tests with the same settings share compiled programs.
WIDTHS = (8,)


@pytest.fixture(scope="module")
def linear_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    y = X @ np.array([1.5, -0.7, 0.3]) + 2.0 + 0.3 * rng.standard_normal(20)
    X_new = rng.normal(size=(6, 3))
    return X, y, X_new


@pytest.fixture(scope="module")
def smooth_data():
    rng = np.random.default_rng(1)
    X = rng.uniform(-1.0, 1.0, (25, 2))
    y = np.sin(2.0 * X[:, 0]) + X[:, 1] ** 2 + 0.05 * rng.standard_normal(25)
    X_new = rng.uniform(-1.5, 1.5, (7, 2))
    return X, y, X_new


def standardize(y):
    return (y - np.mean(y)) / np.std(y), np.mean(y), np.std(y)


def bayesian_linear_regression(features, y, features_new, noise, prior):
    """Posterior mean and covariance of ``y = features w + eps`` with ``w ~ N(0, I / prior)``, at ``features_new``."""
    precision = features.T @ features / noise + prior * np.eye(features.shape[1])
    covariance = np.linalg.inv(precision)
    weights = covariance @ features.T @ y / noise
    return features_new @ weights, features_new @ covariance @ features_new.T


def with_bias(features):
    return np.concatenate([features, np.ones((features.shape[0], 1))], axis=1)


def parameter_vector_jacobian(network, X):
    """Dense float64 Jacobian of the outputs with respect to all parameters, by ``jax.jacobian``."""
    params, static = eqx.partition(network, eqx.is_inexact_array)
    params64 = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), params)
    flat, unravel = ravel_pytree(params64)
    return np.asarray(jax.jacobian(lambda v: eqx.combine(unravel(v), static)(jnp.asarray(X)).astype(jnp.float64))(flat)), np.asarray(flat)


def test_linear_network_equals_blr(linear_data):
    """Without hidden layers the network is linear, so the Laplace posterior is the exact BLR posterior."""
    X, y, X_new = linear_data
    model = LaplaceNetwork(widths=(), subset="full", hessian="ggn", noise=NOISE, prior_precision=PRIOR)
    posterior = model.fit(X, y, key=jax.random.key(0))
    y_std, c, s = standardize(y)
    mean, covariance = bayesian_linear_regression(with_bias(X), y_std, with_bias(X_new), NOISE, PRIOR)

    latent = posterior.predict(X_new, latent=True)
    # The readout is trained in float32 to the ridge solution. It lands within 1e-6 of the
    # target scale, and 1e-4 leaves room for other platforms' rounding.
    np.testing.assert_allclose(latent.mean, c + s * mean, atol=1e-4 * s)
    np.testing.assert_allclose(latent.variance, s**2 * np.diag(covariance), rtol=1e-5)
    np.testing.assert_allclose(posterior.predict(X_new).variance, s**2 * (np.diag(covariance) + NOISE), rtol=1e-5)

    # At the exact mode of a linear-Gaussian model the Laplace evidence is exact.
    marginal = scipy.stats.multivariate_normal(np.zeros(len(y)), with_bias(X) @ with_bias(X).T / PRIOR + NOISE * np.eye(len(y)))
    np.testing.assert_allclose(posterior.log_marginal_likelihood(), marginal.logpdf(y_std) - len(y) * np.log(s), rtol=1e-5)


def test_last_layer_equals_feature_blr(smooth_data):
    X, y, X_new = smooth_data
    # Long training, so that the readout reaches its stationary point to float32 accuracy.
    config = TrainConfig(weight_decay=0.0, num_steps=8000)
    model = LaplaceNetwork(widths=WIDTHS, subset="last-layer", noise=NOISE, prior_precision=PRIOR, config=config)
    posterior = model.fit(X, y, key=jax.random.key(1))
    y_std, c, s = standardize(y)
    features = with_bias(np.asarray(posterior.network.features(X), dtype=np.float64))
    features_new = with_bias(np.asarray(posterior.network.features(X_new), dtype=np.float64))
    mean, covariance = bayesian_linear_regression(features, y_std, features_new, NOISE, PRIOR)

    latent = posterior.predict(X_new, latent=True)
    np.testing.assert_allclose(latent.variance, s**2 * np.diag(covariance), rtol=1e-5)
    # At the MAP the readout is stationary, so it is the BLR mean given the MAP features, up
    # to how well float32 AdamW converges (within 1e-5 of the target scale here).
    np.testing.assert_allclose(latent.mean, c + s * mean, atol=1e-4 * s)

    kron = LaplaceNetwork(widths=WIDTHS, subset="last-layer", hessian="kron", noise=NOISE, prior_precision=PRIOR, config=config)
    kron_posterior = kron.fit(X, y, key=jax.random.key(1))
    np.testing.assert_allclose(kron_posterior.predict(X_new, latent=True).variance, latent.variance, rtol=1e-5)


@pytest.mark.slow
def test_full_ggn_matches_dense_computation(smooth_data):
    """Woodbury-form variances and the eigenvalue-form evidence equal their dense ``P x P`` versions."""
    X, y, X_new = smooth_data
    posterior = LaplaceNetwork(widths=WIDTHS, subset="full").fit(X, y, key=jax.random.key(2))
    noise, prior = float(posterior.noise), float(posterior.prior_precision)
    y_std, _, s = standardize(y)
    J, theta = parameter_vector_jacobian(posterior.network, X)
    J_new, _ = parameter_vector_jacobian(posterior.network, X_new)
    precision = J.T @ J / noise + prior * np.eye(J.shape[1])
    covariance = np.linalg.inv(precision)
    np.testing.assert_allclose(posterior.predict(X_new, latent=True).variance, s**2 * np.einsum("mp,pq,mq->m", J_new, covariance, J_new), rtol=1e-4)

    residual = y_std - np.asarray(posterior.network(X), dtype=np.float64)
    num_params = len(theta)
    expected = (
        scipy.stats.norm(0.0, np.sqrt(noise)).logpdf(residual).sum()
        + scipy.stats.norm(0.0, 1.0 / np.sqrt(prior)).logpdf(theta).sum()
        + 0.5 * num_params * np.log(2.0 * np.pi)
        - 0.5 * np.linalg.slogdet(precision)[1]
    )
    np.testing.assert_allclose(posterior.log_marginal_likelihood(), expected - len(y) * np.log(s), rtol=1e-5)


def test_kron_matches_dense_kronecker_blocks(smooth_data):
    X, y, X_new = smooth_data
    posterior = LaplaceNetwork(widths=WIDTHS, subset="full", hessian="kron", noise=NOISE, prior_precision=PRIOR).fit(X, y, key=jax.random.key(3))
    network = posterior.network
    _, _, s = standardize(y)

    def layer_vectors(Z):
        # a_l from a numpy forward pass; g_l = d f / d b_l by jax.grad of the network itself.
        W1, b1 = (np.asarray(leaf, dtype=np.float64) for leaf in (network.weights[0], network.biases[0]))
        hidden = np.tanh(Z @ W1 + b1)
        inputs = [with_bias(Z), with_bias(hidden)]
        bias_gradient = jax.vmap(jax.grad(lambda net, z: net(z[None])[0]), in_axes=(None, 0))(network, jnp.asarray(Z))
        gradients = [np.asarray(g, dtype=np.float64) for g in bias_gradient.biases]
        return inputs, gradients

    inputs, gradients = layer_vectors(X)
    inputs_new, gradients_new = layer_vectors(X_new)
    n = len(y)
    variance = np.zeros(len(X_new))
    for a, g, a_new, g_new in zip(inputs, gradients, inputs_new, gradients_new):
        factor = np.kron(a.T @ a, g.T @ g / n)
        block = np.linalg.inv(factor / NOISE + PRIOR * np.eye(factor.shape[0]))
        J_new = np.stack([np.kron(a_row, g_row) for a_row, g_row in zip(a_new, g_new)])
        variance += np.einsum("mp,pq,mq->m", J_new, block, J_new)
    np.testing.assert_allclose(posterior.predict(X_new, latent=True).variance, s**2 * variance, rtol=1e-4)

    computed_inputs, computed_gradients = layer_inputs_and_gradients(network, jnp.asarray(X_new))
    for expected, computed in zip(inputs_new + gradients_new, list(computed_inputs) + list(computed_gradients)):
        np.testing.assert_allclose(computed, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("subset", "hessian"), [("full", "ggn"), ("full", "kron"), ("last-layer", "ggn")])
def test_evidence_maximised(smooth_data, subset, hessian):
    X, y, _ = smooth_data
    posterior = LaplaceNetwork(widths=WIDTHS, subset=subset, hessian=hessian).fit(X, y, key=jax.random.key(4))
    best = float(posterior.log_marginal_likelihood())
    p, noise = posterior.prior_precision, posterior.noise
    assert best > float(posterior.log_marginal_likelihood(prior_precision=p / 10))
    assert best > float(posterior.log_marginal_likelihood(prior_precision=p * 10))
    assert best > float(posterior.log_marginal_likelihood(noise=noise / 10))
    assert best > float(posterior.log_marginal_likelihood(noise=noise * 10))
    # The refinement reaches a stationary point: 1% steps change the evidence by second order only.
    for scale in (0.99, 1.01):
        assert best >= float(posterior.log_marginal_likelihood(prior_precision=p * scale)) - 1e-6
        assert best >= float(posterior.log_marginal_likelihood(noise=noise * scale)) - 1e-6


@pytest.mark.parametrize(("subset", "hessian"), [("full", "ggn"), ("full", "kron"), ("last-layer", "ggn")])
def test_function_samples_match_predictive(smooth_data, subset, hessian):
    """Mean and variance of 4000 draws agree with the predictive within 5 Monte Carlo standard errors."""
    X, y, X_new = smooth_data
    posterior = LaplaceNetwork(widths=WIDTHS, subset=subset, hessian=hessian, noise=NOISE, prior_precision=PRIOR).fit(X, y, key=jax.random.key(5))
    draws = np.asarray(posterior.sample_functions(jax.random.key(6), X_new, 4000))
    assert draws.shape == (4000, len(X_new))
    latent = posterior.predict(X_new, latent=True)
    variance = np.asarray(latent.variance)
    assert np.all(np.abs(draws.mean(axis=0) - latent.mean) < 5.0 * np.sqrt(variance / 4000))
    # The sample variance of 4000 Gaussian draws has relative standard error sqrt(2 / 3999) = 2.2%.
    np.testing.assert_allclose(draws.var(axis=0), variance, rtol=5.0 * np.sqrt(2.0 / 3999))


def test_joint_samples_match_dense_covariance(smooth_data):
    X, y, X_new = smooth_data
    posterior = LaplaceNetwork(widths=WIDTHS, subset="full", noise=NOISE, prior_precision=PRIOR).fit(X, y, key=jax.random.key(7))
    _, _, s = standardize(y)
    J, _ = parameter_vector_jacobian(posterior.network, X)
    J_new, _ = parameter_vector_jacobian(posterior.network, X_new[:2])
    covariance = s**2 * J_new @ np.linalg.inv(J.T @ J / NOISE + PRIOR * np.eye(J.shape[1])) @ J_new.T
    draws = np.asarray(posterior.sample_functions(jax.random.key(8), X_new[:2], 20000))
    correlation = covariance[0, 1] / np.sqrt(covariance[0, 0] * covariance[1, 1])
    sample_correlation = np.corrcoef(draws.T)[0, 1]
    # The standard error of a sample correlation is (1 - rho^2) / sqrt(N), and 5 of them are allowed.
    assert abs(sample_correlation - correlation) < 5.0 * (1.0 - correlation**2) / np.sqrt(20000)


def test_predict_under_jit_and_gradient(smooth_data):
    X, y, X_new = smooth_data
    posterior = LaplaceNetwork(widths=WIDTHS).fit(X, y, key=jax.random.key(9))
    eager = posterior.predict(X_new, latent=True)
    assert eager.loc.dtype == jnp.float64
    assert eager.scale.dtype == jnp.float64
    jitted = eqx.filter_jit(lambda p, x: p.predict(x, latent=True).scale)(posterior, jnp.asarray(X_new))
    np.testing.assert_allclose(jitted, eager.scale, rtol=1e-5)
    gradient = jax.grad(lambda x: jnp.sum(posterior.predict(x, latent=True).scale))(jnp.asarray(X_new))
    assert gradient.shape == X_new.shape
    assert np.all(np.isfinite(gradient))
    assert np.any(gradient != 0.0)


def test_warm_start_continues_from_map(smooth_data):
    """One warm step from the MAP moves each parameter by at most the learning rate (Adam's first step)."""
    X, y, _ = smooth_data
    model = LaplaceNetwork(widths=WIDTHS, warm_start_steps=1)
    first = model.fit(X, y, key=jax.random.key(10))
    warm = first.model.fit(X, y, key=jax.random.key(11), num_restarts=1)
    fresh = first.model.fit(X, y, key=jax.random.key(11))
    before = jax.tree.leaves(eqx.filter(first.network, eqx.is_array))
    for old, new in zip(before, jax.tree.leaves(eqx.filter(warm.network, eqx.is_array))):
        assert float(jnp.max(jnp.abs(new - old))) <= 1e-2 * (1.0 + 1e-5)
    distance = max(float(jnp.max(jnp.abs(new - old))) for old, new in zip(before, jax.tree.leaves(eqx.filter(fresh.network, eqx.is_array))))
    assert distance > 0.05


@pytest.mark.slow
def test_bo_loop_on_branin():
    problem = get_problem("branin")
    loop = BayesianOptimization(problem.bounds, surrogate="laplace", num_initial=10, seed=0)

    def run(total):
        while loop.num_evaluations < total:
            x = loop.ask()
            loop.tell(x, problem(x))

    run(12)
    assert isinstance(loop.posterior, LaplacePosterior)
    initial_best = float(np.min(loop.y[:10]))
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    # Evaluations 13 to 15 stay in the 16-row padding bucket and use warm-started fits,
    # whose programs compiled at evaluation 12.
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        run(15)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    assert loop.num_evaluations == 15
    assert loop.best_value <= initial_best
    assert np.all(np.isfinite(loop.y))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"subset": "middle"}, "subset"),
        ({"hessian": "diag"}, "hessian"),
        ({"config": TrainConfig(weight_decay=1e-4)}, "weight_decay"),
        ({"config": TrainConfig(weight_decay=0.0, validation_fraction=0.2)}, "validation_fraction"),
        ({"noise": -1.0}, "noise"),
        ({"prior_precision": 0.0}, "prior_precision"),
        ({"widths": (10, -1)}, "widths"),
        ({"activation": "sigmoid"}, "sigmoid"),
        ({"warm_start_steps": 0}, "warm_start_steps"),
    ],
)
def test_invalid_settings_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LaplaceNetwork(**kwargs)


def test_invalid_inputs_rejected(smooth_data):
    X, y, _ = smooth_data
    model = LaplaceNetwork(widths=(4,))
    with pytest.raises(ValueError, match="key"):
        model.fit(X, y, key=None)
    with pytest.raises(ValueError, match="num_restarts"):
        model.fit(X, y, key=jax.random.key(0), num_restarts=0)
    with pytest.raises(ValueError, match="at least one training row"):
        model.fit(np.zeros((0, 2)), np.zeros(0), key=jax.random.key(0))
    posterior = model.fit(X, y, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"X_new has 3 columns.*fitted on 2"):
        posterior.predict(np.zeros((4, 3)))
