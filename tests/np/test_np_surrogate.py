"""NPModel.fit / posterior.predict: predictive types, checks of the data, empty contexts."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from probnn.np import NPModel

# Each model is trained and compiled once per session: about 40 s on two cores, so the
# module runs with the slow tests.
pytestmark = pytest.mark.slow

RNG = np.random.default_rng(3)
X = RNG.uniform(-2, 2, size=8)
Y = np.sin(2 * X)
X_NEW = np.linspace(-1.9, 1.9, 5)


@pytest.fixture(scope="module")
def cnp_posterior(trained):
    return NPModel(trained["cnp"]).fit(X, Y)


@pytest.fixture(scope="module")
def mpnp_posterior(trained):
    return NPModel(trained["mpnp"]).fit(X[:, None], Y, key=jax.random.key(4))


def test_cnp_predicts_normal(cnp_posterior):
    predictive = cnp_posterior.predict(X_NEW)
    assert isinstance(predictive, dist.Normal)
    assert predictive.batch_shape == (5,)


def test_mpnp_predicts_mixture(mpnp_posterior):
    predictive = mpnp_posterior.predict(X_NEW[:, None])
    assert isinstance(predictive, dist.MixtureSameFamily)
    assert predictive.batch_shape == (5,)
    assert predictive.mixture_size == 3


def test_mixture_mean_averages_components(mpnp_posterior):
    # Equal weights 1/K: the mixture mean is the mean of the component means.
    predictive = mpnp_posterior.predict(X_NEW)
    component_means = predictive.component_distribution.mean
    np.testing.assert_allclose(predictive.mean, component_means.mean(axis=-1), rtol=1e-5)


def test_mixture_log_prob_closed_form(mpnp_posterior):
    predictive = mpnp_posterior.predict(X_NEW)
    value = jnp.asarray(np.cos(X_NEW), predictive.mean.dtype)
    components = predictive.component_distribution
    expected = jax.scipy.special.logsumexp(components.log_prob(value[:, None]), axis=-1) - np.log(3)
    np.testing.assert_allclose(predictive.log_prob(value), expected, rtol=1e-5)


def test_mpnp_posterior_is_deterministic(mpnp_posterior):
    first = mpnp_posterior.predict(X_NEW).mean
    second = mpnp_posterior.predict(X_NEW).mean
    np.testing.assert_array_equal(first, second)


def test_mpnp_key_changes_pseudo_sets(trained):
    model = NPModel(trained["mpnp"])
    first = model.fit(X, Y, key=jax.random.key(0)).pseudo_x
    second = model.fit(X, Y, key=jax.random.key(1)).pseudo_x
    assert float(jnp.max(jnp.abs(first - second))) > 1e-4


def test_empty_context_predicts(trained):
    for name in ("cnp", "mpnp"):
        predictive = NPModel(trained[name]).fit(np.zeros((0, 1)), np.zeros(0)).predict(X_NEW)
        assert bool(jnp.all(jnp.isfinite(predictive.mean)))


def test_mpnp_empty_context_uses_backbone_alone(trained):
    # Without context the pseudo sets are masked out: every component is the backbone
    # given no data.
    network = trained["mpnp"]
    predictive = NPModel(network).fit(np.zeros(0), np.zeros(0)).predict(X_NEW)
    empty = jnp.zeros((50, 1), network.dtype), jnp.zeros(50, network.dtype), jnp.zeros(50, bool)
    mean, _ = network.model.backbone(*empty, jnp.asarray(X_NEW[:, None], network.dtype))
    np.testing.assert_allclose(predictive.component_distribution.mean, np.tile(mean[:, None], (1, 3)), rtol=1e-5,
                               atol=1e-6)


def test_fit_pads_to_point_limit(cnp_posterior):
    assert cnp_posterior.x_context.shape == (50, 1)
    assert cnp_posterior.num_context == 8


def test_model_loads_from_folder(trained_dirs, cnp_posterior):
    posterior = NPModel(trained_dirs["cnp"]).fit(X, Y)
    np.testing.assert_array_equal(posterior.predict(X_NEW).mean, cnp_posterior.predict(X_NEW).mean)


def test_fit_rejects_nan_targets(trained):
    y = Y.copy()
    y[2] = np.nan
    with pytest.raises(ValueError, match="y contains NaN"):
        NPModel(trained["cnp"]).fit(X, y)


def test_fit_rejects_two_dimensional_inputs(trained):
    with pytest.raises(ValueError, match=r"must have shape \(n, 1\) or \(n,\)"):
        NPModel(trained["cnp"]).fit(np.zeros((4, 2)), np.zeros(4))


def test_fit_rejects_mismatched_targets(trained):
    with pytest.raises(ValueError, match="one target per row of X"):
        NPModel(trained["cnp"]).fit(X, Y[:5])


def test_fit_rejects_too_many_points(trained):
    with pytest.raises(ValueError, match="limit of 50 points"):
        NPModel(trained["cnp"]).fit(np.zeros(51), np.zeros(51))


def test_fit_warns_outside_range(trained):
    with pytest.warns(UserWarning, match=r"outside the training range \[-2.0, 2.0\]"):
        NPModel(trained["cnp"]).fit(X * 2, Y)


def test_predict_warns_outside_range(cnp_posterior):
    with pytest.warns(UserWarning, match="X_new has values in"):
        cnp_posterior.predict(np.array([0.0, 3.5]))


def test_fit_inside_range_silent(trained):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        NPModel(trained["cnp"]).fit(X, Y)


def test_sample_functions_not_available_for_cnp(cnp_posterior):
    with pytest.raises(NotImplementedError, match="not joint function samples"):
        cnp_posterior.sample_functions(jax.random.key(0), X_NEW, 4)


def test_mpnp_function_draws_have_shape(mpnp_posterior):
    draws = mpnp_posterior.sample_functions(jax.random.key(1), X_NEW, 7)
    assert draws.shape == (7, 5)


def test_function_draws_are_pseudo_set_means(trained):
    # fit splits its key in two and draws the pseudo sets with the second half, so
    # drawing K functions with that half reproduces the mixture's component means.
    key = jax.random.key(9)
    posterior = NPModel(trained["mpnp"]).fit(X, Y, key=key)
    draws = posterior.sample_functions(jax.random.split(key)[1], X_NEW, 3)
    component_means = posterior.predict(X_NEW).component_distribution.mean
    np.testing.assert_allclose(draws, component_means.T, rtol=1e-5, atol=1e-6)


def test_function_draws_reject_zero_samples(mpnp_posterior):
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        mpnp_posterior.sample_functions(jax.random.key(1), X_NEW, 0)


def test_x_bounds_map_inputs_affinely(trained):
    # [0, 10] onto [-2, 2]: u = -2 + 0.4 x.
    user_x = (X + 2.0) / 0.4
    mapped = NPModel(trained["cnp"]).fit(X, Y).predict(X_NEW)
    bounded = NPModel(trained["cnp"], x_bounds=(0.0, 10.0)).fit(user_x, Y).predict((X_NEW + 2.0) / 0.4)
    np.testing.assert_allclose(bounded.mean, mapped.mean, rtol=1e-5, atol=1e-6)


def test_standardize_is_affine_equivariant(trained):
    # With standardised outputs, fitting a + b y gives predictive mean a + b m and sd b s.
    model = NPModel(trained["mpnp"], standardize=True)
    base = model.fit(X, Y, key=jax.random.key(2)).predict(X_NEW)
    moved = model.fit(X, 3.0 + 40.0 * Y, key=jax.random.key(2)).predict(X_NEW)
    np.testing.assert_allclose(moved.mean, 3.0 + 40.0 * base.mean, rtol=1e-4)
    np.testing.assert_allclose(np.sqrt(moved.variance), 40.0 * np.sqrt(base.variance), rtol=1e-4)


def test_standardize_scales_context_to_half(trained):
    posterior = NPModel(trained["cnp"], standardize=True).fit(X, 5.0 + 2.0 * Y)
    context = np.asarray(posterior.y_context)[: len(Y)]
    np.testing.assert_allclose([context.mean(), context.std()], [0.0, 0.5], atol=1e-5)


def test_posterior_model_keeps_settings(trained):
    model = NPModel(trained["cnp"], x_bounds=(0.0, 1.0), standardize=True, subsample=True)
    again = model.fit((X + 2) / 4, Y).model
    assert (again.x_bounds, again.standardize, again.subsample) == ((0.0, 1.0), True, True)


def test_subsample_conditions_on_point_limit(trained):
    x = np.linspace(-2, 2, 80)
    with pytest.warns(UserWarning, match="random 50 of the 80 context points"):
        posterior = NPModel(trained["cnp"], subsample=True).fit(x, np.sin(x))
    assert posterior.num_context == 50


def test_warning_quotes_user_x_bounds(trained):
    with pytest.warns(UserWarning, match=r"X_new has values in \[-1, 12\], outside x_bounds \[0.0, 10.0\]"):
        NPModel(trained["cnp"], x_bounds=(0.0, 10.0)).fit((X + 2.0) / 0.4, Y).predict(np.array([-1.0, 12.0]))


def test_rejects_reversed_x_bounds(trained):
    with pytest.raises(ValueError, match="low < high"):
        NPModel(trained["cnp"], x_bounds=(1.0, 0.0))
