"""Task priors: shapes, Monte Carlo moments against the kernels, and bad input.

The moment checks compare a sample mean with its expectation and fail when they differ by
more than 4.5 standard errors (a false-alarm rate below 1e-5 per check for near-normal means).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from probnn.kernels import NNGP
from probnn.priors.tasks import (
    TASK_PRIORS,
    BNNTaskPrior,
    GPHyperTaskPrior,
    GPTaskPrior,
    NNGPTaskPrior,
    make_task_prior,
)

Z = 4.5


def _mean_zero_check(values):
    values = np.asarray(values, dtype=np.float64).ravel()
    return abs(values.mean()) < Z * values.std(ddof=1) / np.sqrt(values.size)


@functools.cache
def _batch(name):
    # One shape for every test of a named prior, so each prior compiles once.
    return make_task_prior(name).sample(jax.random.key(0), 64, 40)


@pytest.mark.parametrize("name", sorted(TASK_PRIORS))
def test_task_prior_batch_shapes(name):
    batch = _batch(name)
    features = make_task_prior(name).max_features
    assert (batch.x.shape, batch.y.shape, batch.num_features.shape) == ((64, 40, features), (64, 40), (64,))


@pytest.mark.parametrize("name", sorted(TASK_PRIORS))
def test_task_prior_values_finite(name):
    assert bool(jnp.all(jnp.isfinite(_batch(name).y)))


@pytest.mark.parametrize("kernel", ["rbf", "matern52"])
def test_gp_prior_covariance_matches_kernel(kernel):
    # E[y_1 y_2 | x] = k(x_1, x_2): the residual y_1 y_2 - k has mean zero over datasets.
    prior = GPTaskPrior(kernel=kernel, lengthscale=0.3, outputscale=1.5, noise_variance=0.05)
    batch = prior.sample(jax.random.key(2), 20_000, 2)
    x = batch.x
    k = jax.vmap(lambda xb: prior.gram(xb, jnp.full(1, 0.3), 1.5)[0, 1])(x)
    assert _mean_zero_check(batch.y[:, 0] * batch.y[:, 1] - k)


def test_gp_prior_variance_includes_noise():
    prior = GPTaskPrior(outputscale=1.5, noise_variance=0.05)
    batch = prior.sample(jax.random.key(3), 20_000, 1)
    assert _mean_zero_check(batch.y[:, 0] ** 2 - 1.55)


@pytest.mark.parametrize("name", ["gp-hyper", "bnn"])
def test_task_prior_unused_features_zero(name):
    batch = _batch(name)
    unused = jnp.arange(batch.x.shape[-1])[None, None, :] >= batch.num_features[:, None, None]
    assert bool(jnp.all(jnp.where(unused, batch.x == 0.0, True)))


@pytest.mark.parametrize("name", ["gp-hyper", "bnn"])
def test_task_prior_feature_counts_cover_range(name):
    assert set(np.asarray(_batch(name).num_features).tolist()) == {1, 2, 3, 4, 5, 6}


@pytest.mark.slow
def test_hyper_prior_variance_matches_hyperparameters():
    # y / sqrt(v + noise) has unit variance for the hyperparameters of its own dataset.
    prior = GPHyperTaskPrior(max_features=3)
    key = jax.random.key(6)
    batch = prior.sample(key, 20_000, 1)
    hyper = prior.sample_hyperparameters(key, 20_000)
    standardized = batch.y[:, 0] ** 2 / (hyper.outputscale + hyper.noise_variance)
    assert _mean_zero_check(standardized - 1.0)


@functools.cache
def _latent_batch():
    prior = GPHyperTaskPrior(max_features=2, noise_variance_range=(1e-3, 1e-1), latent_targets=True)
    key = jax.random.key(8)
    return prior.sample(key, 4000, 12), prior.sample_hyperparameters(key, 4000)


def test_latent_prior_returns_function_values():
    batch, _ = _latent_batch()
    assert batch.f.shape == batch.y.shape


def test_noisy_prior_has_no_function_values():
    assert _batch("gp-hyper").f is None


def test_latent_prior_residual_variance_is_noise():
    # (y - f)^2 / noise has mean one for each dataset's own noise variance.
    batch, hyper = _latent_batch()
    standardized = (batch.y - batch.f) ** 2 / hyper.noise_variance[:, None]
    assert _mean_zero_check(standardized[:, 0] - 1.0)


def test_latent_prior_function_variance_is_outputscale():
    batch, hyper = _latent_batch()
    standardized = batch.f[:, 0] ** 2 / hyper.outputscale
    assert _mean_zero_check(standardized - 1.0)


def test_latent_prior_covariance_matches_kernel():
    # The first two points of each dataset: E[f_0 f_1 / v] is the RBF correlation at
    # their scaled distance.
    batch, hyper = _latent_batch()
    x, f = np.asarray(batch.x), np.asarray(batch.f)
    ell, v = np.asarray(hyper.lengthscale), np.asarray(hyper.outputscale)
    r2 = np.sum(((x[:, 0] - x[:, 1]) / ell) ** 2, axis=-1)
    assert _mean_zero_check(f[:, 0] * f[:, 1] / v - np.exp(-0.5 * r2))


def test_bo_prior_draws_without_cholesky_failure():
    # Noise down to 1e-6 of the output scale: the eigendecomposition draw stays finite.
    assert bool(jnp.all(jnp.isfinite(_batch("gp-hyper-bo").f)))


def test_bnn_prior_datasets_differ():
    batch = _batch("bnn")
    assert not bool(jnp.allclose(batch.y[0], batch.y[1]))


def test_bnn_prior_function_standardized():
    # f has mean 0 and variance 1 over each dataset's 40 points, so mean(y) is the mean of
    # 40 noise draws with sd <= 0.3: within 4.5 * 0.3 / sqrt(40) = 0.21 of zero.
    np.testing.assert_array_less(jnp.abs(jnp.mean(_batch("bnn").y, axis=1)), 0.21)


def test_bnn_prior_rejects_unknown_activation():
    with pytest.raises(ValueError, match="activations"):
        BNNTaskPrior(activations=("gelu",))


def test_nngp_prior_covariance_matches_kernel():
    kernel = NNGP(depth=2, activation="relu")
    prior = NNGPTaskPrior(kernel=kernel, noise_variance=0.01, num_features=2)
    batch = prior.sample(jax.random.key(9), 20_000, 2)
    k = jax.vmap(lambda xb: kernel(xb)[0, 1])(batch.x.astype(jnp.float64))
    assert _mean_zero_check(batch.y[:, 0] * batch.y[:, 1] - k)


def test_student_t_prior_scales_variance():
    # With s ~ InverseGamma(5, 4), E[s] = 1 and y^2 has mean E[s] (k(x, x) + noise) = 1.01.
    prior = NNGPTaskPrior(scale_prior=dist.InverseGamma(5.0, 4.0), noise_variance=0.01)
    batch = prior.sample(jax.random.key(10), 40_000, 1)
    assert _mean_zero_check(batch.y[:, 0] ** 2 - 1.01)


def test_task_prior_unknown_name():
    with pytest.raises(ValueError, match="gp-hyper"):
        make_task_prior("gp-rbf")


def test_task_prior_rejects_nonpositive_lengthscale():
    with pytest.raises(ValueError, match="lengthscale"):
        GPTaskPrior(lengthscale=0.0)


def test_task_prior_rejects_zero_batch():
    with pytest.raises(ValueError, match="batch_size"):
        GPTaskPrior().sample(jax.random.key(0), 0, 10)


def test_hyper_prior_rejects_min_above_max():
    with pytest.raises(ValueError, match="min_features"):
        GPHyperTaskPrior(max_features=2, min_features=3)
