"""Tests of the optax trainers: accuracy, early stopping, weights, minibatches and vmapping."""

import equinox as eqx
import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from probnn.nets import MLP, TrainConfig, fit_network, squared_error, train_network


@pytest.fixture(scope="module")
def sine():
    X = np.linspace(-1.0, 1.0, 100)[:, None]
    return X, np.sin(3.0 * X[:, 0])


def test_fits_sine(sine):
    X, y = sine
    model, history = train_network(MLP(1, (50, 50), key=jax.random.key(1)), X, y, key=jax.random.key(2))
    assert model(X).dtype == jnp.float32
    assert float(jnp.mean((model(X) - y) ** 2)) < 1e-4
    # Between the training points the fit is as good: this is interpolation of a smooth function.
    X_between = np.linspace(-0.99, 0.99, 57)[:, None]
    assert float(jnp.mean((model(X_between) - np.sin(3.0 * X_between[:, 0])) ** 2)) < 1e-4
    assert int(history.num_steps) == 2000
    assert np.all(np.isnan(history.validation_loss))
    assert float(history.train_loss[-1]) < 1e-2 * float(history.train_loss[0])


def test_early_stopping_returns_best_parameters():
    """A wide network overfits 40 noisy points, and the returned model has the lowest validation loss seen."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1.0, 1.0, (40, 1))
    y = np.sin(3.0 * X[:, 0]) + 0.5 * rng.standard_normal(40)
    validation = np.zeros(40, dtype=np.float32)
    validation[:12] = 1.0
    config = TrainConfig(learning_rate=1e-2, weight_decay=0.0, num_steps=4000, patience=150)
    model = MLP(1, (100, 100), key=jax.random.key(3))
    fitted, history = eqx.filter_jit(fit_network)(
        model, jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32), 1.0 - validation, validation,
        jax.random.key(4), config,
    )
    steps = int(history.num_steps)
    assert steps < config.num_steps, "the run never stopped early, so the test did not exercise stopping"
    recorded = np.asarray(history.validation_loss[:steps])
    assert np.all(np.isfinite(recorded))
    assert np.all(np.isnan(np.asarray(history.validation_loss[steps:])))
    assert int(history.best_step) == int(np.argmin(recorded))
    assert steps == int(history.best_step) + 1 + config.patience
    loss = float(squared_error(fitted, jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32), validation))
    np.testing.assert_allclose(loss, np.min(recorded), rtol=1e-5)


def test_train_network_validation_split():
    rng = np.random.default_rng(1)
    X = rng.uniform(-1.0, 1.0, (50, 1))
    y = np.sin(3.0 * X[:, 0]) + 0.5 * rng.standard_normal(50)
    _, history = train_network(
        MLP(1, (100, 100), key=jax.random.key(5)), X, y, key=jax.random.key(6),
        validation_fraction=0.3, patience=100, num_steps=3000, weight_decay=0.0,
    )
    steps = int(history.num_steps)
    assert steps < 3000
    assert int(history.best_step) == int(np.nanargmin(np.asarray(history.validation_loss)))
    # The validation loss is measured on held-out rows, so it ends above the training loss.
    assert float(history.validation_loss[steps - 1]) > float(history.train_loss[steps - 1])


def test_weight_decay_closed_form():
    """With zero training weights the loss gradient vanishes and AdamW only decays the weights.

    Each step then multiplies every parameter by ``1 - lr_t * weight_decay`` with ``lr_t``
    the cosine schedule, so the result is the initial value times the product of those factors.
    """
    config = TrainConfig(learning_rate=0.05, weight_decay=2.0, num_steps=200)
    model = MLP(2, (5,), key=jax.random.key(7))
    model = eqx.tree_at(lambda m: m.biases, model, tuple(jnp.ones_like(b) for b in model.biases))
    X = jnp.ones((6, 2), jnp.float32)
    fitted, _ = eqx.filter_jit(fit_network)(
        model, X, jnp.ones(6, jnp.float32), jnp.zeros(6, jnp.float32), jnp.zeros(6, jnp.float32),
        jax.random.key(8), config,
    )
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.num_steps, alpha=0.01)
    factor = np.prod([1.0 - float(schedule(t)) * config.weight_decay for t in range(config.num_steps)])
    assert factor < 0.01
    for before, after in zip(jax.tree.leaves(eqx.filter(model, eqx.is_array)), jax.tree.leaves(eqx.filter(fitted, eqx.is_array))):
        np.testing.assert_allclose(after, factor * np.asarray(before), rtol=1e-4, atol=1e-9)


def test_minibatches_fit_sine(sine):
    X, y = sine
    model, history = train_network(
        MLP(1, (50, 50), key=jax.random.key(9)), X, y, key=jax.random.key(10), batch_size=16, num_steps=3000
    )
    assert float(jnp.mean((model(X) - y) ** 2)) < 1e-3
    assert int(history.num_steps) == 3000


@pytest.mark.parametrize("batch_size", [None, 8])
def test_zero_weight_rows_ignored(sine, batch_size):
    """Rows with zero training weight have absurd targets, which neither full batches nor minibatches see."""
    X, y = sine
    y_corrupted = y.copy()
    y_corrupted[::4] = 1e3
    weights = np.ones(100, np.float32)
    weights[::4] = 0.0
    config = TrainConfig(num_steps=1500, batch_size=batch_size)
    fitted, _ = eqx.filter_jit(fit_network)(
        MLP(1, (30, 30), key=jax.random.key(11)), jnp.asarray(X, jnp.float32), jnp.asarray(y_corrupted, jnp.float32),
        jnp.asarray(weights), jnp.zeros(100, jnp.float32), jax.random.key(12), config,
    )
    # The corrupted rows' inputs are surrounded by clean rows, so the fit there is the sine.
    assert float(jnp.max(jnp.abs(fitted(X) - y))) < 0.1


def test_vmapped_ensemble_equals_members_alone():
    """Training a stacked ensemble in one vmapped program gives each member's solo result."""
    rng = np.random.default_rng(2)
    X = jnp.asarray(rng.uniform(-1.0, 1.0, (30, 2)), jnp.float32)
    y = jnp.sin(3.0 * X[:, 0]) * X[:, 1]
    num_members = 3
    init_keys = jax.random.split(jax.random.key(13), num_members)
    train_keys = jax.random.split(jax.random.key(14), num_members)
    # Bootstrap counts as training weights and out-of-bag rows as validation weights.
    counts = np.stack([np.bincount(rng.integers(0, 30, 30), minlength=30) for _ in range(num_members)])
    train_weights = jnp.asarray(counts, jnp.float32)
    validation_weights = jnp.asarray(counts == 0, jnp.float32)
    config = TrainConfig(num_steps=300, patience=50)

    members = eqx.filter_vmap(lambda k: MLP(2, (16, 16), key=k))(init_keys)
    vmapped = eqx.filter_jit(
        eqx.filter_vmap(fit_network, in_axes=(eqx.if_array(0), None, None, 0, 0, 0, None))
    )
    stacked, histories = vmapped(members, X, y, train_weights, validation_weights, train_keys, config)

    solo = eqx.filter_jit(fit_network)
    for i in range(num_members):
        member, history = solo(MLP(2, (16, 16), key=init_keys[i]), X, y, train_weights[i], validation_weights[i], train_keys[i], config)
        assert int(histories.num_steps[i]) == int(history.num_steps)
        assert int(histories.best_step[i]) == int(history.best_step)
        from_stack = jax.tree.map(lambda leaf: leaf[i], eqx.filter(stacked, eqx.is_array))
        for a, b in zip(jax.tree.leaves(from_stack), jax.tree.leaves(eqx.filter(member, eqx.is_array))):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_settings_override_config():
    X = np.linspace(0.0, 1.0, 10)
    config = TrainConfig(num_steps=500, learning_rate=1e-3)
    _, history = train_network(MLP(1, (4,), key=jax.random.key(0)), X, X**2, key=jax.random.key(1), config=config, num_steps=7)
    assert int(history.num_steps) == 7
    assert history.train_loss.shape == (7,)


def test_second_call_does_not_recompile():
    X = np.linspace(0.0, 1.0, 12)[:, None]
    model = MLP(1, (4,), key=jax.random.key(0))
    train_network(model, X, X[:, 0], key=jax.random.key(1), num_steps=5)
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        train_network(model, X, np.cos(X[:, 0]), key=jax.random.key(2), num_steps=5)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"weight_decay": float("nan")}, "weight_decay"),
        ({"num_steps": 0}, "num_steps"),
        ({"patience": 1.5}, "patience"),
        ({"batch_size": 0}, "batch_size"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
    ],
)
def test_invalid_config_rejected(settings, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**settings)


def test_invalid_data_rejected():
    model = MLP(1, (4,), key=jax.random.key(0))
    with pytest.raises(ValueError, match="different numbers of rows"):
        train_network(model, np.zeros((5, 1)), np.zeros(4), key=jax.random.key(0))
    with pytest.raises(ValueError, match="NaN"):
        train_network(model, np.zeros((3, 1)), np.array([0.0, np.nan, 1.0]), key=jax.random.key(0))
    with pytest.raises(ValueError, match="at least one training row"):
        train_network(model, np.zeros((0, 1)), np.zeros(0), key=jax.random.key(0))
    with pytest.raises(ValueError, match="leaves no training rows"):
        train_network(model, np.zeros((2, 1)), np.zeros(2), key=jax.random.key(0), validation_fraction=0.9)
