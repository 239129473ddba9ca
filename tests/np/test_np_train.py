"""Training loop, checkpoints, resume and evaluation, on tiny models and real optax steps."""

import json

import jax
import numpy as np
import pytest

from probnn.np import NPModel, NPTrainSettings, build_model, evaluate_np, load_np, save_np, train_np

# Training and compiling the three models: about 40 s on two cores, so the module runs
# with the slow tests.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("model", ["cnp", "canp", "mpnp"])
def test_training_lowers_loss(model, trained, eval_batch, make_tiny_config, tiny_settings, loss_function):
    # The trained model starts from the same initialisation (seed 0) as the fresh one. Both
    # are scored with one key on one fixed batch of 32 tasks that training never saw, so
    # the two losses differ only through training. The margin 0.02 nats per point is far
    # above float32 rounding.
    init_key, _ = jax.random.split(jax.random.key(tiny_settings.seed))
    with jax.enable_x64(False):
        fresh = build_model(make_tiny_config(model), init_key)
        before, _ = loss_function(fresh, eval_batch, jax.random.key(9))
        after, _ = loss_function(trained[model].model, eval_batch, jax.random.key(9))
    assert float(after) < float(before) - 0.02


def test_mpnp_loss_terms_reported(trained, eval_batch, loss_function):
    with jax.enable_x64(False):
        loss, terms = loss_function(trained["mpnp"].model, eval_batch, jax.random.key(9))
    assert set(terms) == {"marginal", "likelihood", "pseudo"}
    # The default pseudo_weight is 0.1.
    np.testing.assert_allclose(
        float(loss), float(terms["marginal"] + terms["likelihood"] + 0.1 * terms["pseudo"]), rtol=1e-5
    )


def test_checkpoint_record(trained_dirs, tiny_settings):
    record = json.loads((trained_dirs["mpnp"] / "config.json").read_text())
    assert record["format"] == "probnn-np-1"
    assert record["config"]["model"] == "mpnp"
    assert record["task_name"] == "rbf"
    assert record["limits"] == {"x_range": [-2.0, 2.0], "max_points": 50}
    assert record["training"]["steps_done"] == tiny_settings.steps
    assert record["training"]["seconds"] > 0
    assert "CPU cores" in record["training"]["hardware"]


def test_history_has_header_and_steps(trained_dirs, tiny_settings):
    lines = (trained_dirs["cnp"] / "history.csv").read_text().split()
    assert lines[0] == "step,seconds,loss"
    assert lines[-1].startswith(f"{tiny_settings.steps},")


@pytest.mark.parametrize("model", ["cnp", "mpnp"])
def test_save_load_identical_predictions(model, trained, tmp_path):
    network = trained[model]
    save_np(network, tmp_path / "copy")
    copy = load_np(tmp_path / "copy")
    assert copy.config == network.config
    assert copy.metadata == network.metadata
    leaves = jax.tree_util.tree_leaves(network.model)
    copy_leaves = jax.tree_util.tree_leaves(copy.model)
    assert all(np.array_equal(a, b) for a, b in zip(leaves, copy_leaves, strict=True))
    x = np.linspace(-2, 2, 9)
    expected = NPModel(network).fit(x[::2], np.sin(x[::2])).predict(x)
    actual = NPModel(copy).fit(x[::2], np.sin(x[::2])).predict(x)
    np.testing.assert_array_equal(actual.mean, expected.mean)
    np.testing.assert_array_equal(actual.variance, expected.variance)


def test_resume_matches_uninterrupted_run(tmp_path, make_tiny_config):
    # The first call stops after one step (max_minutes is tiny) and saves; the second call
    # resumes from that step. Batches are drawn with fold_in(key, step), so the resumed
    # run must reproduce the uninterrupted one exactly.
    settings = NPTrainSettings(steps=12, batch_size=8, warmup_steps=2, learning_rate=3e-3)
    config = make_tiny_config("cnp")
    first = train_np(config, "rbf", settings, tmp_path / "resumed", max_minutes=1e-9, progress=False)
    assert first.metadata["training"]["steps_done"] == 1
    saved = json.loads((tmp_path / "resumed" / "training.json").read_text())
    assert saved["step"] == 1
    resumed = train_np(config, "rbf", settings, tmp_path / "resumed", checkpoint_every=5, progress=False)
    whole = train_np(config, "rbf", settings, tmp_path / "whole", checkpoint_every=5, progress=False)
    assert resumed.metadata["training"]["steps_done"] == 12
    leaves = jax.tree_util.tree_leaves(resumed.model)
    whole_leaves = jax.tree_util.tree_leaves(whole.model)
    assert all(np.array_equal(a, b) for a, b in zip(leaves, whole_leaves, strict=True))


def test_resume_rejects_other_settings(trained_dirs, make_tiny_config, tiny_settings):
    other = NPTrainSettings(steps=tiny_settings.steps, batch_size=8, warmup_steps=4, learning_rate=3e-3)
    with pytest.raises(ValueError, match="other settings"):
        train_np(make_tiny_config("cnp"), "rbf", other, trained_dirs["cnp"], progress=False)


def test_evaluate_reports_means_and_errors(trained):
    report = evaluate_np(trained["cnp"], "rbf", num_tasks=40, seed=0, batch_size=16)
    assert report["num_tasks"] == 40
    for name in ("context_ll", "context_ll_se", "target_ll", "target_ll_se"):
        assert np.isfinite(report[name])
    assert report["context_ll_se"] > 0
    assert report["target_ll_se"] > 0


# Compiles the MPNP forward pass for evaluation: about 3 s.
@pytest.mark.slow
def test_evaluate_mixture_log_likelihood(trained):
    # MPNP scores points under the K-component mixture; the report must be finite too.
    report = evaluate_np(trained["mpnp"], "rbf", num_tasks=16, seed=1, batch_size=16)
    assert np.isfinite(report["target_ll"])


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(steps=0), "steps must be a positive integer"),
        (dict(batch_size=2.5), "batch_size must be a positive integer"),
        (dict(learning_rate=-1.0), "learning_rate must be positive"),
        (dict(warmup_steps=-3), "warmup_steps must be an integer >= 0"),
        (dict(pseudo_weight=float("nan")), "pseudo_weight must be >= 0"),
    ],
)
def test_settings_reject_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        NPTrainSettings(**changes)


def test_train_rejects_unknown_model(tmp_path):
    with pytest.raises(ValueError, match="choose one of cnp, canp, mpnp"):
        train_np("anp", "rbf", NPTrainSettings(steps=1), tmp_path, progress=False)


def test_train_rejects_unknown_task(tmp_path):
    with pytest.raises(ValueError, match="Unknown neural process task 'sine'"):
        train_np("cnp", "sine", NPTrainSettings(steps=1), tmp_path, progress=False)


def test_evaluate_rejects_bad_task_count(trained):
    with pytest.raises(ValueError, match="num_tasks must be a positive integer"):
        evaluate_np(trained["cnp"], "rbf", num_tasks=0)


def test_load_rejects_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="neither a shipped neural process checkpoint"):
        load_np(tmp_path / "missing")


def test_load_rejects_other_format(trained_dirs, tmp_path):
    folder = tmp_path / "pfn-like"
    folder.mkdir()
    (folder / "model.eqx").write_bytes((trained_dirs["cnp"] / "model.eqx").read_bytes())
    (folder / "config.json").write_text(json.dumps({"format": "probnn-pfn-1"}))
    with pytest.raises(ValueError, match="not a probnn neural process checkpoint"):
        load_np(folder)
