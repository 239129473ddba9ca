"""Task families: shapes, masks, GP covariances, heavy-tailed noise, Lotka-Volterra paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probnn.priors.np_tasks import NP_TASKS, GPNPTask, LotkaVolterraNPTask, make_np_task


# Each family's sampler compiles in 3 to 7 s, so only rbf stays in the default suite.
# The slow test_gp_covariance_matches_kernel checks the kernels of the others.
FAST_TASKS = ["rbf"]
SLOW_TASKS = [pytest.param(name, marks=pytest.mark.slow) for name in sorted(set(NP_TASKS) - set(FAST_TASKS))]


@pytest.mark.parametrize("name", FAST_TASKS + SLOW_TASKS)
def test_task_batch_shapes_and_masks(name):
    batch = make_np_task(name).sample(jax.random.key(0), 64)
    context, target = np.asarray(batch.context_mask), np.asarray(batch.target_mask)
    assert batch.x.shape == (64, 50, 1)
    assert batch.y.shape == (64, 50)
    assert not np.any(context & target)
    assert context.sum(axis=1).min() >= 3
    assert target.sum(axis=1).min() >= 3
    assert np.all(np.isfinite(np.asarray(batch.y)))


@pytest.fixture(scope="module")
def rbf_batch():
    """4096 tasks of the rbf family, shared so that the sampler compiles once."""
    return make_np_task("rbf").sample(jax.random.key(2), 4096)


def test_task_inputs_inside_range(rbf_batch):
    x = np.asarray(rbf_batch.x)
    assert x.min() >= -2.0
    assert x.max() <= 2.0


def test_context_sizes_cover_range(rbf_batch):
    # N_c is uniform on {3, ..., 47}: 4096 draws reach both ends with probability > 0.999.
    counts = np.asarray(rbf_batch.context_mask).sum(axis=1)
    assert counts.min() == 3
    assert counts.max() == 47


def _empirical_covariance_check(task, x, gram, num_draws=4000, seed=0):
    """Largest |sample covariance - exact| in units of its Monte Carlo standard error."""
    y = np.asarray(task.sample_outputs(jax.random.key(seed), jnp.tile(x, (num_draws, 1))), dtype=float)
    sample = y.T @ y / num_draws
    # For zero-mean Gaussians, Var(y_i y_j) = S_ii S_jj + S_ij^2.
    diagonal = np.diag(gram)
    standard_error = np.sqrt((np.outer(diagonal, diagonal) + gram**2) / num_draws)
    return np.max(np.abs(sample - gram) / standard_error)


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["rbf", "matern", "periodic"])
def test_gp_covariance_matches_kernel(kernel):
    # Fixed hyperparameters, so y ~ N(0, K + 0.02^2 I) exactly. Each of the 15 distinct
    # entries is within 4.5 standard errors except with probability about 1e-4.
    task = GPNPTask(kernel, lengthscale_range=(0.4, 0.4), scale_range=(0.8, 0.8), period_range=(0.5, 0.5))
    x = jnp.array([-1.5, -0.4, 0.0, 0.3, 1.7], jnp.float32)
    gram = np.asarray(task.covariance(x, 0.4, 0.8, 0.5), dtype=float) + 0.02**2 * np.eye(5)
    assert _empirical_covariance_check(task, x, gram) < 4.5


def test_random_scale_variance_closed_form(rbf_batch):
    # s ~ U[0.1, 1]: E[s^2] = (1 - 0.1^3) / (3 * 0.9) = 0.37, plus the noise variance 0.02^2.
    y = np.asarray(rbf_batch.y, dtype=float)
    expected = 0.37 + 0.02**2
    # Tasks are independent; the per-task mean of y^2 carries the spread of s^2.
    per_task = np.mean(y**2, axis=1)
    standard_error = per_task.std(ddof=1) / np.sqrt(per_task.size)
    assert abs(per_task.mean() - expected) < 4 * standard_error


def _tail_ratio(residuals):
    magnitude = np.abs(residuals).ravel()
    return np.quantile(magnitude, 0.995) / np.quantile(magnitude, 0.75)


@pytest.mark.slow
def test_t_noise_residuals_heavier_tails():
    # For Gaussian residuals q_0.995(|r|) / q_0.75(|r|) = 2.807 / 1.150 = 2.44. The Student-t
    # noise with 2.1 degrees of freedom, mixed over its scale, gave 9.0 to 10.2 for five
    # seeds of 12,800 residuals, so the threshold 4 is far from both.
    x = jax.random.uniform(jax.random.key(4), (256, 50), minval=-2.0, maxval=2.0)
    task = make_np_task("t-noise")
    f, y = jax.jit(task.sample_latent_and_outputs)(jax.random.key(5), x)
    assert _tail_ratio(np.asarray(y - f)) > 4.0


@pytest.mark.slow
def test_lotka_volterra_nonnegative_and_finite():
    task = LotkaVolterraNPTask()
    path = np.asarray(task.simulate(jax.random.key(6), 128))
    assert path.shape == (128, task.num_steps + 1, 2)
    assert np.all(np.isfinite(path))
    assert path.min() >= 0.0
    assert path.max() <= task.max_population


@pytest.mark.slow
def test_lotka_volterra_populations_oscillate():
    # Without noise the populations would cycle around (100, 50). The median path must move
    # by at least 20 individuals, which a simulator stuck at its initial state would not.
    path = np.asarray(LotkaVolterraNPTask().simulate(jax.random.key(7), 128))
    spread = path.max(axis=1) - path.min(axis=1)
    assert np.median(spread[:, 0]) > 20
    assert np.median(spread[:, 1]) > 20


@pytest.mark.slow
def test_lotka_volterra_outputs_are_scaled_populations():
    batch = make_np_task("lotka-volterra").sample(jax.random.key(8), 64)
    y = np.asarray(batch.y)
    assert y.min() >= 0.0
    assert y.max() <= 10.0


def test_make_np_task_rejects_unknown_name():
    with pytest.raises(ValueError, match="choose one of rbf, matern, periodic, t-noise, lotka-volterra"):
        make_np_task("sawtooth")


def test_gp_task_rejects_unknown_kernel():
    with pytest.raises(ValueError, match="kernel must be one of"):
        GPNPTask("linear")


def test_task_rejects_impossible_split():
    with pytest.raises(ValueError, match="exceeds max_points"):
        GPNPTask("rbf", max_points=5, min_context=3, min_target=3)


def test_task_rejects_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        make_np_task("rbf").sample(jax.random.key(0), 0)
