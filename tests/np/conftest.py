"""Tiny neural processes trained once per test session on the real training loop."""

import equinox as eqx
import jax
import pytest

from probnn.np import NPConfig, NPTrainSettings, np_loss, train_np

#: Sizes small enough that compiling and training each model takes seconds on a CPU. The
#: models skip the CANP self-attention block, because it costs a third of MPNP's compile
#: time. test_np_models.py adds one to its CANP to test the block's masking.
TINY = dict(hidden=16, num_heads=2, encoder_depth=2, decoder_depth=2, self_attention_layers=0, num_pseudo_sets=3,
            pseudo_size=5)
SETTINGS = NPTrainSettings(steps=40, batch_size=16, warmup_steps=4, learning_rate=5e-3, seed=0)


#: The loss, compiled once per model and batch shape rather than run op by op.
jitted_loss = eqx.filter_jit(np_loss)


def tiny_config(model: str, **changes) -> NPConfig:
    return NPConfig(model=model, **{**TINY, **changes})


@pytest.fixture(scope="session")
def make_tiny_config():
    """Return :func:`tiny_config`, for tests that build their own models."""
    return tiny_config


@pytest.fixture(scope="session")
def tiny_settings():
    """Return the training settings of the session's tiny models."""
    return SETTINGS


@pytest.fixture(scope="session")
def loss_function():
    """Return the jitted :func:`probnn.np.np_loss`."""
    return jitted_loss


@pytest.fixture(scope="session")
def trained_dirs(tmp_path_factory):
    """Training folders of CNP, CANP and MPNP, each trained for 40 steps on the rbf task."""
    dirs = {}
    for model in ("cnp", "canp", "mpnp"):
        out = tmp_path_factory.mktemp(f"tiny-{model}")
        train_np(tiny_config(model), "rbf", SETTINGS, out, checkpoint_every=20, progress=False)
        dirs[model] = out
    return dirs


@pytest.fixture(scope="session")
def trained(trained_dirs):
    from probnn.np import load_np

    return {model: load_np(path) for model, path in trained_dirs.items()}


@pytest.fixture(scope="session")
def eval_batch():
    """A fixed batch of 32 rbf tasks, drawn in float32 as in training."""
    from probnn.priors.np_tasks import make_np_task

    with jax.enable_x64(False):
        return make_np_task("rbf").sample(jax.random.key(123), 32)
