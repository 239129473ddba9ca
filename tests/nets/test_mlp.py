"""Tests of the MLP module: shapes, dtypes, the forward pass, initialisation and bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probnn.nets import ACTIVATIONS, MLP, FeatureMap, MeanFunction, mlp_forward


def numpy_forward(model, X, phi):
    """Forward pass written directly in numpy from the module's weights and biases."""
    h = np.asarray(X, dtype=np.float64)
    weights = [np.asarray(W, dtype=np.float64) for W in model.weights]
    biases = [np.asarray(b, dtype=np.float64) for b in model.biases]
    for W, b in zip(weights[:-1], biases[:-1]):
        h = phi(h @ W + b)
    return h, h @ weights[-1] + biases[-1]


def test_shapes_scalar_output():
    model = MLP(3, (7, 5), key=jax.random.key(0))
    X = np.zeros((11, 3))
    assert model(X).shape == (11,)
    assert model.features(X).shape == (11, 5)
    assert model.widths == (7, 5)
    assert model.in_features == 3
    assert model.num_features == 5
    assert [W.shape for W in model.weights] == [(3, 7), (7, 5), (5, 1)]
    assert [b.shape for b in model.biases] == [(7,), (5,), (1,)]


def test_shapes_vector_output():
    model = MLP(2, (4,), key=jax.random.key(0), out_features=3)
    assert model(np.ones((6, 2))).shape == (6, 3)
    assert model.weights[-1].shape == (4, 3)


def test_dtypes_default_and_float64():
    X = np.ones((4, 2))
    model32 = MLP(2, (8,), key=jax.random.key(1))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(model32))
    assert model32(X).dtype == jnp.float32
    model64 = MLP(2, (8,), key=jax.random.key(1), dtype=jnp.float64)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(model64))
    assert model64(X).dtype == jnp.float64


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_forward_matches_numpy(activation):
    phi = {"tanh": np.tanh, "relu": lambda a: np.maximum(a, 0.0)}[activation]
    model = MLP(3, (6, 4), key=jax.random.key(2), activation=activation, dtype=jnp.float64)
    # Non-zero biases, so the test also checks where they enter.
    keys = jax.random.split(jax.random.key(3), len(model.biases))
    biases = tuple(jax.random.normal(k, b.shape, jnp.float64) for k, b in zip(keys, model.biases))
    model = eqx.tree_at(lambda m: m.biases, model, biases)
    X = np.random.default_rng(0).normal(size=(9, 3))
    features, output = numpy_forward(model, X, phi)
    np.testing.assert_allclose(model.features(X), features, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model(X), output[:, 0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        mlp_forward(model.weights, model.biases, X, activation), output[:, 0], rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_runs_under_jit(activation):
    model = MLP(2, (5,), key=jax.random.key(0), activation=activation)
    X = np.linspace(-1.0, 1.0, 8).reshape(4, 2)
    eager = model(X)
    jitted = eqx.filter_jit(lambda m, x: m(x))(model, X)
    assert np.all(np.isfinite(eager))
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)


def test_initialisation_is_lecun_normal():
    """Weights have variance 1 / fan_in: with 400 * 300 draws the sample variance is within 2%."""
    model = MLP(400, (300,), key=jax.random.key(4), dtype=jnp.float64)
    W = np.asarray(model.weights[0])
    # The sample variance of N = 120000 normal draws has relative standard error
    # sqrt(2 / N) = 0.4%, so 2% is five standard errors.
    assert abs(np.var(W) * 400 - 1.0) < 0.02
    assert abs(np.mean(W)) < 5.0 / np.sqrt(W.size * 400)
    assert all(np.all(np.asarray(b) == 0.0) for b in model.biases)


def test_stacked_ensemble_vmaps():
    keys = jax.random.split(jax.random.key(5), 4)
    stacked = eqx.filter_vmap(lambda k: MLP(2, (6,), key=k))(keys)
    assert stacked.weights[0].shape == (4, 2, 6)
    X = np.random.default_rng(1).normal(size=(5, 2))
    outputs = eqx.filter_vmap(lambda m: m(X))(stacked)
    assert outputs.shape == (4, 5)
    for i, k in enumerate(keys):
        np.testing.assert_allclose(outputs[i], MLP(2, (6,), key=k)(X), rtol=1e-6, atol=1e-6)


def test_protocols_recognised():
    model = MLP(2, (3,), key=jax.random.key(0))
    assert isinstance(model, MeanFunction)
    assert isinstance(model, FeatureMap)


def test_no_hidden_layer_is_linear_model():
    model = MLP(3, (), key=jax.random.key(6), dtype=jnp.float64)
    X = np.random.default_rng(2).normal(size=(5, 3))
    assert model.widths == ()
    np.testing.assert_allclose(model.features(X), X)
    expected = X @ np.asarray(model.weights[0])[:, 0] + np.asarray(model.biases[0])[0]
    np.testing.assert_allclose(model(X), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_features": 0}, "in_features"),
        ({"in_features": 2.0}, "in_features"),
        ({"widths": (50, 0)}, "widths"),
        ({"widths": (50, 2.5)}, "widths"),
        ({"widths": (True,)}, "widths"),
        ({"activation": "sigmoid"}, "sigmoid"),
    ],
)
def test_invalid_settings_rejected(kwargs, message):
    settings = {"in_features": 2, "widths": (4,), "activation": "tanh"} | kwargs
    with pytest.raises(ValueError, match=message):
        MLP(settings.pop("in_features"), settings.pop("widths"), key=jax.random.key(0), **settings)


def test_wrong_input_columns_rejected():
    model = MLP(3, (4,), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"3 input columns.*shape \(5, 2\)"):
        model(np.ones((5, 2)))
