"""Deep ensembles: row weights, the out-of-bag noise, the mixture predictive and the BO loop."""

import equinox as eqx
import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from probnn.bnn.ensemble import DeepEnsemble, EnsemblePosterior
from probnn.bo import BayesianOptimization, get_problem
from probnn.nets import TrainConfig

# Small members and short training, shared by most tests so they reuse compiled programs.
WIDTHS = (16,)
CONFIG = TrainConfig(num_steps=400)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1.0, 1.0, (26, 2))
    y = 3.0 * np.sin(2.0 * X[:, 0]) + X[:, 1] ** 2 + 10.0 + 0.1 * rng.standard_normal(26)
    return X, y


@pytest.fixture(scope="module")
def posterior(data):
    X, y = data
    return DeepEnsemble(num_members=4, widths=WIDTHS, config=CONFIG).fit(X, y, key=jax.random.key(0))


def test_predictive_is_equal_weight_mixture(data, posterior):
    X, y = data
    X_new = np.array([[0.0, 0.0], [0.5, -0.5], [2.0, 2.0]])
    members = np.asarray(posterior.member_predictions(X_new))
    assert members.shape == (4, 3)
    s = np.std(y)

    predictive = posterior.predict(X_new)
    assert isinstance(predictive, dist.MixtureSameFamily)
    assert predictive.batch_shape == (3,)
    np.testing.assert_allclose(predictive.mixing_distribution.probs, np.full((3, 4), 0.25))
    np.testing.assert_allclose(predictive.component_distribution.loc, members.T, rtol=1e-12)
    np.testing.assert_allclose(predictive.component_distribution.scale, np.sqrt(float(posterior.noise)) * s, rtol=1e-12)
    # Law of total variance: the noise plus the spread of the member means.
    np.testing.assert_allclose(predictive.mean, members.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(predictive.variance, float(posterior.noise) * s**2 + members.var(axis=0), rtol=1e-9)

    latent = posterior.predict(X_new, latent=True)
    np.testing.assert_allclose(latent.component_distribution.scale, posterior.model.latent_scale * s, rtol=1e-12)
    assert latent.mean.dtype == jnp.float64


def test_noise_is_out_of_bag_mse(data, posterior):
    X, y = data
    weights = np.asarray(posterior.row_weights)
    assert weights.shape == (4, 32)
    assert np.all(weights[:, 26:] == 0.0)
    residuals = (np.asarray(posterior.member_predictions(X)) - y) ** 2
    out_of_bag = weights[:, :26] == 0
    assert out_of_bag.any()
    expected = residuals[out_of_bag].mean() / np.var(y)
    np.testing.assert_allclose(float(posterior.noise), expected, rtol=1e-5)


def test_bootstrap_counts_are_multinomial():
    """Counts of n draws from n rows: each row's count is Binomial(n, 1/n).

    With 400 members and n = 10 rows, the share of zero counts, (1 - 1/n)^n = 0.349, has a
    standard error of 0.0075 over the 4000 member-row pairs. The test allows 5 of them.
    """
    X = np.linspace(0.0, 1.0, 10)[:, None]
    model = DeepEnsemble(num_members=400, widths=(2,), config=TrainConfig(num_steps=1))
    weights = np.asarray(model.fit(X, X[:, 0], key=jax.random.key(1)).row_weights)[:, :10]
    assert np.all(weights == np.round(weights))
    np.testing.assert_array_equal(weights.sum(axis=1), 10.0)
    assert abs(np.mean(weights == 0) - 0.9**10) < 5 * 0.0075
    assert abs(np.mean(weights == 1) - 10 * 0.1 * 0.9**9) < 5 * 0.0075


@pytest.mark.parametrize(("resampling", "expected_rows"), [("subset", 8), ("none", 10)])
def test_subset_and_no_resampling_weights(resampling, expected_rows):
    X = np.linspace(0.0, 1.0, 10)[:, None]
    model = DeepEnsemble(num_members=50, widths=(2,), resampling=resampling, config=TrainConfig(num_steps=1))
    weights = np.asarray(model.fit(X, X[:, 0], key=jax.random.key(2)).row_weights)
    assert set(np.unique(weights)) <= {0.0, 1.0}
    np.testing.assert_array_equal(weights.sum(axis=1), expected_rows)
    assert np.all(weights[:, 10:] == 0.0)
    if resampling == "subset":
        # Every row is left out by some member: the subsets differ.
        assert np.all(weights[:, :10].min(axis=0) == 0.0)


def test_spread_grows_away_from_data():
    X = np.linspace(-1.0, 1.0, 40)[:, None]
    y = np.sin(3.0 * X[:, 0])
    posterior = DeepEnsemble(num_members=5, widths=(32, 32), config=TrainConfig(num_steps=1500)).fit(X, y, key=jax.random.key(3))
    X_grid = np.linspace(-0.95, 0.95, 30)[:, None]
    assert float(jnp.max(jnp.abs(posterior.predict(X_grid).mean - np.sin(3.0 * X_grid[:, 0])))) < 0.15
    inside = np.std(np.asarray(posterior.member_predictions(X_grid)), axis=0).mean()
    outside = np.std(np.asarray(posterior.member_predictions(np.array([[3.0], [-3.0]]))), axis=0).mean()
    assert outside > 5.0 * inside


def test_sample_functions_are_whole_members(data, posterior):
    X_new = np.array([[0.1, 0.2], [-0.4, 0.9]])
    members = np.asarray(posterior.member_predictions(X_new))
    draws = np.asarray(posterior.sample_functions(jax.random.key(4), X_new, 4000))
    assert draws.shape == (4000, 2)
    # Each draw is one member's function at all points, so it matches one member row exactly.
    matches = np.all(np.isclose(draws[:, None, :], members[None, :, :], rtol=0.0, atol=1e-12), axis=2)
    np.testing.assert_array_equal(matches.sum(axis=1), 1)
    # Members are chosen uniformly: each share is 1/4 with standard error 0.0068 over 4000 draws.
    assert np.all(np.abs(matches.mean(axis=0) - 0.25) < 5 * 0.0068)


def test_predict_under_jit_and_gradient(posterior):
    X_new = jnp.array([[0.1, 0.2], [-0.4, 0.9]])
    eager = posterior.predict(X_new, latent=True).mean
    jitted = eqx.filter_jit(lambda p, x: p.predict(x, latent=True).mean)(posterior, X_new)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    gradient = jax.grad(lambda x: jnp.sum(posterior.predict(x, latent=True).mean))(X_new)
    assert np.all(np.isfinite(gradient))
    assert np.any(gradient != 0.0)


def test_warm_start_continues_from_members(data, posterior):
    """One warm step moves each parameter by about the learning rate at most (Adam's first step).

    The decoupled weight decay adds ``lr * weight_decay * |theta|`` (below 1e-5 here) and
    float32 rounding a few ulps, so the bound is the learning rate plus 0.1%.
    """
    X, y = data
    warm_model = DeepEnsemble(num_members=4, widths=WIDTHS, config=CONFIG, warm_start_steps=1)
    warm_model = eqx.tree_at(lambda m: m.members, warm_model, posterior.members, is_leaf=lambda node: node is None)
    warm = warm_model.fit(X, y, key=jax.random.key(5), num_restarts=1)
    before = jax.tree.leaves(eqx.filter(posterior.members, eqx.is_array))
    for old, new in zip(before, jax.tree.leaves(eqx.filter(warm.members, eqx.is_array))):
        assert float(jnp.max(jnp.abs(new - old))) <= CONFIG.learning_rate * (1.0 + 1e-3)
    fresh = warm_model.fit(X, y, key=jax.random.key(5))
    distance = max(float(jnp.max(jnp.abs(new - old))) for old, new in zip(before, jax.tree.leaves(eqx.filter(fresh.members, eqx.is_array))))
    assert distance > 0.05


@pytest.mark.slow
def test_bo_loop_on_branin():
    problem = get_problem("branin")
    loop = BayesianOptimization(problem.bounds, surrogate="ensemble", num_initial=10, seed=0)

    def run(total):
        while loop.num_evaluations < total:
            x = loop.ask()
            loop.tell(x, problem(x))

    run(12)
    assert isinstance(loop.posterior, EnsemblePosterior)
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
    assert loop.best_value <= initial_best
    assert np.all(np.isfinite(loop.y))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_members": 0}, "num_members"),
        ({"resampling": "jackknife"}, "resampling"),
        ({"config": TrainConfig(validation_fraction=0.2)}, "validation_fraction"),
        ({"subset_fraction": 0.0}, "subset_fraction"),
        ({"latent_scale": 0.0}, "latent_scale"),
        ({"noise_lower_bound": -1.0}, "noise_lower_bound"),
        ({"widths": ()}, "widths"),
        ({"activation": "sigmoid"}, "sigmoid"),
        ({"config": {"num_steps": 10}}, "TrainConfig"),
    ],
)
def test_invalid_settings_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DeepEnsemble(**kwargs)


def test_invalid_inputs_rejected(data, posterior):
    X, y = data
    model = DeepEnsemble(num_members=2, widths=WIDTHS, config=CONFIG)
    with pytest.raises(ValueError, match="key"):
        model.fit(X, y, key=None)
    with pytest.raises(ValueError, match="num_restarts"):
        model.fit(X, y, key=jax.random.key(0), num_restarts=-1)
    with pytest.raises(ValueError, match="different numbers of rows"):
        model.fit(X, y[:5], key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"X_new has 1 columns.*fitted on 2"):
        posterior.predict(np.zeros((4, 1)))
