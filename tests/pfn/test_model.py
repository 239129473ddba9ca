"""The transformer's symmetries, its checkpoints and its limits, on a briefly trained PFN."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probnn.pfn import PFNConfig, TrainSettings, load_pfn, save_pfn, train_pfn
from probnn.pfn.network import predict_logits
from probnn.priors.tasks import GPTaskPrior

RNG = np.random.default_rng(0)
X_TRAIN = RNG.uniform(size=(12, 1))
Y_TRAIN = np.sin(6 * X_TRAIN[:, 0])
X_TEST = RNG.uniform(size=(5, 1))


@eqx.filter_jit
def _jitted_logits(pfn, x_train, y_train, x_test):
    return predict_logits(pfn, x_train, y_train, x_test)[0]


def _logits(pfn, x_train, y_train, x_test):
    arrays = (jnp.asarray(a, jnp.float32) for a in (x_train, y_train, x_test))
    return np.asarray(_jitted_logits(pfn, *arrays))


def test_pfn_invariant_to_training_order(tiny_pfn):
    order = RNG.permutation(12)
    np.testing.assert_allclose(
        _logits(tiny_pfn, X_TRAIN, Y_TRAIN, X_TEST), _logits(tiny_pfn, X_TRAIN[order], Y_TRAIN[order], X_TEST), atol=1e-4
    )


def test_pfn_queries_do_not_see_each_other(tiny_pfn):
    together = _logits(tiny_pfn, X_TRAIN, Y_TRAIN, X_TEST)
    alone = _logits(tiny_pfn, X_TRAIN, Y_TRAIN, X_TEST[:1])
    np.testing.assert_allclose(together[:1], alone, atol=1e-4)


def test_pfn_prediction_depends_on_targets(tiny_pfn):
    assert not np.allclose(_logits(tiny_pfn, X_TRAIN, Y_TRAIN, X_TEST), _logits(tiny_pfn, X_TRAIN, -Y_TRAIN, X_TEST))


def test_pfn_predicts_without_training_points(tiny_pfn):
    predictive = tiny_pfn.predict(np.zeros((0, 1)), np.zeros(0), X_TEST)
    assert np.all(np.isfinite(np.asarray(predictive.mean)))


def test_pfn_predictive_batch_shape(tiny_pfn):
    assert tiny_pfn.predict(X_TRAIN, Y_TRAIN, X_TEST).batch_shape == (5,)


def test_pfn_training_lowers_loss(tiny_pfn_dir):
    rows = np.loadtxt(tiny_pfn_dir / "history.csv", delimiter=",", skiprows=1)
    assert rows[-1, 2] < rows[0, 2] - 0.3


def test_pfn_checkpoint_round_trip(tiny_pfn, tmp_path):
    save_pfn(tiny_pfn, tmp_path)
    again = load_pfn(tmp_path)
    np.testing.assert_array_equal(_logits(again, X_TRAIN, Y_TRAIN, X_TEST), _logits(tiny_pfn, X_TRAIN, Y_TRAIN, X_TEST))


def test_pfn_checkpoint_records_limits(tiny_pfn_dir):
    record = json.loads((tiny_pfn_dir / "config.json").read_text())
    assert record["limits"] == {"max_features": 1, "max_train_points": 20}


def test_pfn_too_many_points_names_limit(tiny_pfn):
    with pytest.raises(ValueError, match="max_train_points = 20"):
        tiny_pfn.predict(np.zeros((21, 1)), np.zeros(21), X_TEST)


def test_pfn_too_many_features_names_limit(tiny_pfn):
    with pytest.raises(ValueError, match="max_features = 1"):
        tiny_pfn.predict(np.zeros((3, 2)), np.zeros(3), np.zeros((1, 2)))


def test_pfn_rejects_nan_targets(tiny_pfn):
    with pytest.raises(ValueError, match="NaN"):
        tiny_pfn.predict(X_TRAIN, np.full(12, np.nan), X_TEST)


def test_load_pfn_rejects_unknown_name(tmp_path):
    with pytest.raises(ValueError, match="neither a shipped PFN"):
        load_pfn(tmp_path / "missing")


def _train(out, steps, max_minutes=None):
    config = PFNConfig(
        max_features=1, max_train_points=8, d_model=16, num_layers=1, num_heads=2, d_ff=16, num_buckets=16
    )
    settings = TrainSettings(steps=steps, batch_size=8, warmup_steps=2)
    return train_pfn(GPTaskPrior(), config, settings, out, checkpoint_every=5, max_minutes=max_minutes, progress=False)


# Five training runs of a tiny network, each resuming the last: about 20 s on two cores.
@pytest.mark.slow
def test_pfn_training_resumes_exactly(tmp_path):
    straight = _train(tmp_path / "straight", 10)
    # Interrupted runs: a zero time budget stops after one step; the last call finishes.
    for _ in range(3):
        _train(tmp_path / "resumed", 10, max_minutes=0.0)
    resumed = _train(tmp_path / "resumed", 10)
    np.testing.assert_allclose(
        np.asarray(resumed.network.head.weight), np.asarray(straight.network.head.weight), rtol=1e-5, atol=1e-7
    )


def test_pfn_stopped_run_records_steps(tmp_path):
    assert _train(tmp_path, 10, max_minutes=0.0).metadata["training"]["steps_done"] == 1


def test_pfn_resume_rejects_other_settings(tmp_path):
    _train(tmp_path, 10, max_minutes=0.0)
    with pytest.raises(ValueError, match="other settings"):
        _train(tmp_path, 11)


def test_pfn_config_rejects_bad_heads():
    with pytest.raises(ValueError, match="multiple of num_heads"):
        PFNConfig(d_model=30, num_heads=4)


def test_pfn_train_rejects_feature_mismatch(tmp_path):
    with pytest.raises(ValueError, match="max_features"):
        train_pfn(GPTaskPrior(num_features=2), PFNConfig(max_features=1), TrainSettings(steps=1), tmp_path)


@pytest.mark.slow
def test_pfn_loss_scores_function_values(tiny_hyper_pfn):
    # With f in the batch the held-out targets are f, not y.
    from probnn.pfn.train import pfn_loss
    from probnn.priors.tasks import GPHyperTaskPrior

    prior = GPHyperTaskPrior(max_features=3, latent_targets=True)
    batch = prior.sample(jax.random.key(3), 4, 20)
    mask = jnp.arange(20)[None, :] < 10
    args = (tiny_hyper_pfn.network, tiny_hyper_pfn.borders, tiny_hyper_pfn.config)
    on_f = pfn_loss(*args, batch, jnp.broadcast_to(mask, (4, 20)))
    on_y = pfn_loss(*args, batch._replace(f=None), jnp.broadcast_to(mask, (4, 20)))
    assert float(on_f) != float(on_y)


@pytest.mark.slow
def test_pfn_fine_tuning_starts_from_network(tiny_hyper_pfn, tmp_path):
    from probnn.priors.tasks import GPHyperTaskPrior

    prior = GPHyperTaskPrior(max_features=3, latent_targets=True)
    settings = TrainSettings(steps=1, batch_size=4, learning_rate=1e-12, warmup_steps=0)
    tuned = train_pfn(prior, tiny_hyper_pfn.config, settings, tmp_path, init=tiny_hyper_pfn, progress=False)
    np.testing.assert_allclose(
        np.asarray(tuned.network.head.weight), np.asarray(tiny_hyper_pfn.network.head.weight), atol=1e-6
    )


@pytest.mark.slow
def test_pfn_fine_tuning_keeps_borders(tiny_hyper_pfn, tmp_path):
    from probnn.priors.tasks import GPHyperTaskPrior

    prior = GPHyperTaskPrior(max_features=3, latent_targets=True)
    settings = TrainSettings(steps=1, batch_size=4, warmup_steps=0)
    tuned = train_pfn(prior, tiny_hyper_pfn.config, settings, tmp_path, init=tiny_hyper_pfn, progress=False)
    np.testing.assert_array_equal(np.asarray(tuned.borders), np.asarray(tiny_hyper_pfn.borders))


@pytest.mark.slow
def test_pfn_fine_tuning_rejects_other_config(tiny_hyper_pfn, tmp_path):
    from probnn.priors.tasks import GPHyperTaskPrior

    config = PFNConfig(max_features=3, max_train_points=15, d_model=16, num_layers=1, num_heads=2, d_ff=16, num_buckets=16)
    with pytest.raises(ValueError, match="same config"):
        train_pfn(GPHyperTaskPrior(max_features=3), config, TrainSettings(steps=1), tmp_path, init=tiny_hyper_pfn)
