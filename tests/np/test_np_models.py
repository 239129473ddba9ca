"""Model contracts: shapes, padding, empty contexts, permutations and pseudo context sets."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probnn.np import MPNP, NPConfig, build_model

# Compiling MPNP takes 10 to 13 s on two cores, so the module runs with the slow tests.
pytestmark = pytest.mark.slow

RNG = np.random.default_rng(0)
X_CTX = jnp.asarray(RNG.uniform(-2, 2, size=(6, 1)), jnp.float32)
Y_CTX = jnp.asarray(np.sin(3 * np.asarray(X_CTX[:, 0])), jnp.float32)
X_TGT = jnp.asarray(np.linspace(-2, 2, 7)[:, None], jnp.float32)
PSEUDO_KEY = jax.random.key(11)


@pytest.fixture(scope="module", params=["cnp", "canp", "mpnp"])
def model(request, make_tiny_config):
    # CANP keeps one self-attention block to test its masking. The MPNP backbone is the
    # same CANP class, so MPNP goes without one, which saves a third of its compile time.
    layers = 1 if request.param == "canp" else 0
    return build_model(make_tiny_config(request.param, self_attention_layers=layers), jax.random.key(0))


@eqx.filter_jit
def _predict(model, x_ctx, y_ctx, mask, x_tgt):
    if isinstance(model, MPNP):
        return model(x_ctx, y_ctx, mask, x_tgt, key=PSEUDO_KEY)
    return model(x_ctx, y_ctx, mask, x_tgt)


def predict(model, x_ctx, y_ctx, mask, x_tgt=X_TGT):
    """Means and standard deviations; MPNP uses one fixed key so that its draws are comparable."""
    return _predict(model, x_ctx, y_ctx, mask, x_tgt)


def test_prediction_shapes(model):
    mean, sd = predict(model, X_CTX, Y_CTX, jnp.ones(6, bool))
    expected = (3, 7) if isinstance(model, MPNP) else (7,)
    assert mean.shape == expected
    assert sd.shape == expected


def test_standard_deviation_floor(model):
    _, sd = predict(model, X_CTX, Y_CTX, jnp.ones(6, bool))
    assert float(jnp.min(sd)) > 0.1


def test_parameters_are_float32(model):
    leaves = jax.tree_util.tree_leaves(model)
    assert all(leaf.dtype == jnp.float32 for leaf in leaves if hasattr(leaf, "dtype"))


def test_padded_points_leave_predictions_unchanged(model):
    # The same six context points, alone and followed by four padded points holding NaN,
    # infinity and large values: the predictions must agree to float32 rounding.
    mean, sd = predict(model, X_CTX, Y_CTX, jnp.ones(6, bool))
    x_pad = jnp.concatenate([X_CTX, jnp.array([[jnp.nan], [1e6], [-3.0], [0.5]], jnp.float32)])
    y_pad = jnp.concatenate([Y_CTX, jnp.array([jnp.inf, -1e6, 7.0, jnp.nan], jnp.float32)])
    mask = jnp.arange(10) < 6
    padded_mean, padded_sd = predict(model, x_pad, y_pad, mask)
    np.testing.assert_allclose(padded_mean, mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(padded_sd, sd, rtol=1e-5, atol=1e-5)


def test_empty_context_finite_and_padding_free(model):
    # With every point masked out, the prediction is the null token's and cannot depend on
    # the values stored in the padding.
    mask = jnp.zeros(6, bool)
    mean, sd = predict(model, X_CTX, Y_CTX, mask)
    other_mean, other_sd = predict(model, -X_CTX, 5.0 + Y_CTX, mask)
    assert bool(jnp.all(jnp.isfinite(mean)))
    assert bool(jnp.all(jnp.isfinite(sd)))
    np.testing.assert_array_equal(other_mean, mean)
    np.testing.assert_array_equal(other_sd, sd)


# Compiles every model for a third set of shapes: about 5 s.
@pytest.mark.slow
def test_empty_context_zero_length_arrays(model):
    mean, _ = predict(model, jnp.zeros((0, 1), jnp.float32), jnp.zeros((0,), jnp.float32), jnp.zeros((0,), bool))
    assert bool(jnp.all(jnp.isfinite(mean)))


def test_context_permutation_invariance(model):
    permutation = jnp.array([3, 0, 5, 1, 4, 2])
    mask = jnp.ones(6, bool)
    mean, sd = predict(model, X_CTX, Y_CTX, mask)
    permuted_mean, permuted_sd = predict(model, X_CTX[permutation], Y_CTX[permutation], mask)
    np.testing.assert_allclose(permuted_mean, mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(permuted_sd, sd, rtol=1e-5, atol=1e-5)


def test_context_changes_prediction(model):
    # Guards the invariance tests above: a model that ignored its context would pass them.
    mask = jnp.ones(6, bool)
    mean, _ = predict(model, X_CTX, Y_CTX, mask)
    shifted_mean, _ = predict(model, X_CTX, Y_CTX + 2.0, mask)
    assert float(jnp.max(jnp.abs(shifted_mean - mean))) > 1e-3


@eqx.filter_jit
def generate(model, noise, x_pseudo, x_ctx, y_ctx, mask):
    return model.generator(noise, x_pseudo, x_ctx, y_ctx, mask)


@eqx.filter_jit
def pseudo_contexts(model, key, x_ctx, y_ctx, mask):
    return model.pseudo_contexts(key, x_ctx, y_ctx, mask)


@pytest.fixture(scope="module")
def mpnp(make_tiny_config):
    return build_model(make_tiny_config("mpnp"), jax.random.key(1))


PSEUDO_X = jnp.linspace(-1.5, 1.5, 5, dtype=jnp.float32)[:, None]


def test_pseudo_points_equivariant_to_row_order(mpnp):
    # Exchangeability: the generator maps i.i.d. (noise, input) rows through a permutation
    # equivariant map, so permuting the rows permutes the pseudo outputs and nothing else.
    noise = jax.random.normal(jax.random.key(2), (5, 16), jnp.float32)
    permutation = jnp.array([4, 2, 0, 1, 3])
    mask = jnp.ones(6, bool)
    y = generate(mpnp, noise, PSEUDO_X, X_CTX, Y_CTX, mask)
    y_perm = generate(mpnp, noise[permutation], PSEUDO_X[permutation], X_CTX, Y_CTX, mask)
    np.testing.assert_allclose(y_perm, y[permutation], rtol=1e-5, atol=1e-6)


def test_pseudo_points_invariant_to_context_order(mpnp):
    noise = jax.random.normal(jax.random.key(3), (5, 16), jnp.float32)
    permutation = jnp.array([5, 4, 3, 2, 1, 0])
    mask = jnp.ones(6, bool)
    y = generate(mpnp, noise, PSEUDO_X, X_CTX, Y_CTX, mask)
    y_perm = generate(mpnp, noise, PSEUDO_X, X_CTX[permutation], Y_CTX[permutation], mask)
    np.testing.assert_allclose(y_perm, y, rtol=1e-5, atol=1e-6)


def test_pseudo_outputs_depend_on_inputs(mpnp):
    # Guards the tests above: a generator that ignored its inputs would pass them.
    noise = jnp.zeros((5, 16), jnp.float32)
    y = generate(mpnp, noise, PSEUDO_X, X_CTX, Y_CTX, jnp.ones(6, bool))
    assert float(jnp.std(y)) > 1e-4


def test_pseudo_sets_shape_and_range(mpnp):
    x, y = pseudo_contexts(mpnp, jax.random.key(4), X_CTX, Y_CTX, jnp.ones(6, bool))
    assert x.shape == (3, 5, 1)
    assert y.shape == (3, 5)
    assert float(jnp.max(jnp.abs(x))) <= 2.0


def test_pseudo_inputs_uniform_on_domain(mpnp):
    # 4000 sets of 5 uniform draws on [-2, 2]: mean 0 and variance 4/3, each checked to
    # 5 standard errors (0.0082 for the mean, 0.0084 for the mean of x^2).
    x, _ = mpnp.pseudo_contexts(jax.random.key(6), X_CTX, Y_CTX, jnp.ones(6, bool), 4000)
    x = np.asarray(x).ravel()
    assert abs(x.mean()) < 0.041
    assert abs(np.mean(x**2) - 4.0 / 3.0) < 0.042


def test_pseudo_sets_differ_between_sets(mpnp):
    # Independent noise per set: the K sets are distinct draws, the source of the mixture.
    _, y = pseudo_contexts(mpnp, jax.random.key(5), X_CTX, Y_CTX, jnp.ones(6, bool))
    assert float(jnp.std(y[:, 0])) > 1e-4


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(model="anp"), "must be one of cnp, canp, mpnp"),
        (dict(hidden=0), "hidden must be a positive integer"),
        (dict(hidden=30, num_heads=4), "must be a multiple of num_heads"),
        (dict(self_attention_layers=-1), "self_attention_layers must be an integer >= 0"),
        (dict(num_pseudo_sets=0), "num_pseudo_sets must be a positive integer"),
    ],
)
def test_config_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        NPConfig(**changes)


def test_config_from_dict_rejects_unknown():
    with pytest.raises(ValueError, match="Unknown NPConfig entries"):
        NPConfig.from_dict({"model": "cnp", "width": 3})
