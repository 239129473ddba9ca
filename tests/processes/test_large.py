"""Inducing-point processes, the row-blocked exact path, and the choice between them by size."""

import json

import jax
import numpy as np
import pytest

from probnn.cli import fit_command
from probnn.cli.main import main
from probnn.kernels import NNGP, RBF, linalg
from probnn.priors import BurrXII
from probnn.processes import GaussianProcess, ScaleMixtureProcess, StudentTProcess
from probnn.processes import inducing, large, sparse
from probnn.processes._data import pad_training_data
from probnn.processes.exact import _condition_program, blocked_noisy_gram
from probnn.processes.sparse import SparsePosterior, SparseProcess


def sine_data(n, dim=2, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(n, dim))
    return X, np.sin(6.0 * X[:, 0]) + np.cos(3.0 * X[:, -1]) + noise * rng.standard_normal(n)


def processes(dim):
    kernel = NNGP(depth=3).with_input_dim(dim)
    return {
        "gaussian": GaussianProcess(kernel, noise=0.05),
        "student-t": StudentTProcess(kernel, noise=0.05),
        "burr": ScaleMixtureProcess(kernel, BurrXII(2.0, 2.0), noise=0.05),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gaussian", "student-t", "burr"])
def test_sparse_at_training_inputs_is_exact(name):
    # With Z = X, Q = K up to the inducing jitter of 1e-6 of the mean diagonal, so the bound
    # and the predictive are the exact ones to that order.
    X, y = sine_data(60)
    process = processes(2)[name]
    exact = process.condition(X, y)
    approximate = SparseProcess(process, num_inducing=60).condition(X, y)
    assert isinstance(approximate, SparsePosterior)
    assert float(approximate.log_marginal_likelihood()) <= float(exact.log_marginal_likelihood()) + 1e-9
    np.testing.assert_allclose(approximate.log_marginal_likelihood(), exact.log_marginal_likelihood(), atol=5e-3)
    X_new = np.random.default_rng(1).uniform(size=(7, 2))
    p_exact, p_sparse = exact.predict(X_new), approximate.predict(X_new)
    assert type(p_exact) is type(p_sparse)
    np.testing.assert_allclose(p_sparse.mean, p_exact.mean, atol=1e-4)
    np.testing.assert_allclose(np.sqrt(p_sparse.variance), np.sqrt(p_exact.variance), rtol=1e-3)
    y_new = np.sin(6.0 * X_new[:, 0])
    np.testing.assert_allclose(p_sparse.log_prob(y_new), p_exact.log_prob(y_new), atol=1e-3)


@pytest.mark.parametrize("name", ["gaussian", "student-t", "burr"])
def test_bound_monotone_in_nested_inducing_sets(name):
    # Titsias's bound is monotone in nested inducing sets and never above log p(y); the
    # scale-mixture bounds inherit both properties through the s-free trace term.
    X, y = sine_data(120, seed=3)
    process = processes(2)[name]
    exact = float(process.condition(X, y).log_marginal_likelihood())
    Z = X[np.random.default_rng(4).permutation(120)[:40]]
    bounds = [
        float(SparseProcess(process, m, inducing_inputs=Z[:m]).condition(X, y).log_marginal_likelihood())
        for m in (5, 10, 20, 40)
    ]
    assert all(a <= b + 1e-8 for a, b in zip(bounds, bounds[1:])), bounds
    assert bounds[-1] <= exact + 1e-8
    assert bounds[0] < exact - 1.0


def test_bound_matches_posterior_evidence():
    X, y = sine_data(50)
    process = processes(2)["student-t"]
    standardised = (y - y.mean()) / y.std()
    model = SparseProcess(process, 12, inducing_init="kcenter")
    posterior = model.condition(X, standardised)
    np.testing.assert_allclose(
        posterior.model.log_marginal_bound(X, standardised), posterior.log_marginal_likelihood(), rtol=1e-10
    )


@pytest.mark.slow
def test_sparse_fit_matches_exact_rmse():
    X, y = sine_data(300, seed=5)
    X_test, y_test = sine_data(200, seed=6)
    process = GaussianProcess(RBF().with_input_dim(2), max_iterations=60, num_restarts=1)
    model = SparseProcess(process, num_inducing=20)
    before = float(model.condition(X, y).log_marginal_likelihood())
    fitted = model.fit(X, y, key=jax.random.key(0))
    assert float(fitted.log_marginal_likelihood()) > before + 1.0
    assert fitted.inducing_inputs.shape == (20, 2)
    exact = process.fit(X, y, key=jax.random.key(0))
    rmse_sparse = float(np.sqrt(np.mean((fitted.predict(X_test).mean - y_test) ** 2)))
    rmse_exact = float(np.sqrt(np.mean((exact.predict(X_test).mean - y_test) ** 2)))
    # A smooth function in 2-d is captured by 20 inducing points: within 20% of the exact
    # RMSE, which itself sits near the noise level 0.1.
    assert rmse_sparse < 1.2 * rmse_exact + 0.01, (rmse_sparse, rmse_exact)


def test_fixed_inducing_inputs_stay_put():
    X, y = sine_data(80)
    Z = X[:8]
    process = GaussianProcess(RBF().with_input_dim(2), max_iterations=20, num_restarts=1)
    posterior = SparseProcess(process, 8, inducing_inputs=Z, learn_inducing=False).fit(X, y)
    np.testing.assert_array_equal(np.asarray(posterior.inducing_inputs), Z)


def test_sparse_student_t_degrees_of_freedom():
    X, y = sine_data(90)
    process = processes(2)["student-t"]
    posterior = SparseProcess(process, 15).condition(X, y)
    predictive = posterior.predict(X[:4])
    np.testing.assert_allclose(predictive.df, 2.0 * float(process.alpha) + 90)


@pytest.mark.parametrize("name", ["gaussian", "student-t", "burr"])
def test_function_samples_match_the_latent_predictive(name):
    X, y = sine_data(70, seed=7)
    posterior = SparseProcess(processes(2)[name], 12).condition(X, y)
    X_new = np.random.default_rng(8).uniform(size=(4, 2))
    draws = np.asarray(posterior.sample_functions(jax.random.key(1), X_new, 20000))
    predictive = posterior.predict(X_new, latent=True)
    mean, sd = np.asarray(predictive.mean), np.sqrt(np.asarray(predictive.variance))
    # Monte Carlo error of the mean is sd / sqrt(20000); 5 of those fails about once in 10^6 runs.
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 5.0 * sd / np.sqrt(20000))
    # The sample sd of heavy-tailed draws converges slowly: a 5% tolerance.
    np.testing.assert_allclose(draws.std(axis=0), sd, rtol=0.05)


def test_sparse_process_rejects_bad_input():
    process = processes(2)["gaussian"]
    with pytest.raises(ValueError, match="process must be"):
        SparseProcess(RBF())
    with pytest.raises(ValueError, match="num_inducing"):
        SparseProcess(process, 0)
    with pytest.raises(ValueError, match="inducing_init"):
        SparseProcess(process, 4, inducing_init="grid")
    X, y = sine_data(20)
    with pytest.raises(ValueError, match="columns"):
        SparseProcess(process, 4, inducing_inputs=np.zeros((4, 3))).condition(X, y)
    with pytest.raises(ValueError, match="0 rows"):
        SparseProcess(process, 4).fit(np.zeros((0, 2)), np.zeros(0))
    posterior = SparseProcess(process, 4).condition(X, y)
    with pytest.raises(ValueError, match="columns"):
        posterior.predict(np.zeros((3, 5)))


# -- inducing-input initialisation -----------------------------------------------------------


def test_k_center_covers_data():
    X = np.random.default_rng(0).uniform(size=(500, 2))
    Z = inducing.initial_inducing_inputs(X, 25, "kcenter", seed=0)
    rows = [int(np.nonzero(np.all(X == z, axis=1))[0][0]) for z in Z]
    assert len(set(rows)) == 25
    # Gonzalez's traversal is a 2-approximation; 25 centres on the unit square have an
    # optimal covering radius of about 0.14, so every point lies within 0.3 of a centre.
    radius = np.max(np.min(np.linalg.norm(X[:, None, :] - Z[None], axis=-1), axis=1))
    assert radius < 0.3


@pytest.mark.parametrize("method", ["kmeans", "random"])
def test_other_initialisations_return_the_requested_number(method):
    X = np.random.default_rng(0).normal(size=(200, 3))
    Z = inducing.initial_inducing_inputs(X, 16, method, seed=1)
    assert Z.shape == (16, 3)
    assert np.all(np.isfinite(Z))


def test_initialisation_rejects_more_inducing_points_than_data():
    with pytest.raises(ValueError, match="num_inducing=30"):
        inducing.initial_inducing_inputs(np.zeros((10, 2)), 30, "kmeans", seed=0)


# -- the blocked exact path ------------------------------------------------------------------


def test_blocked_gram_equals_the_masked_gram():
    X, y = sine_data(90, dim=3)
    data = pad_training_data(X, y)
    kernel = NNGP(depth=3).with_input_dim(3)
    A = blocked_noisy_gram(kernel, data, 0.05, 0.0, block_rows=32)
    mask = np.asarray(data.mask)
    expected = np.where(mask[:, None] & mask[None, :], np.asarray(kernel.gram(data.X)), 0.0)
    expected += np.diag(np.where(mask, 0.05, 1.0))
    np.testing.assert_allclose(A, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("noise", [0.05, 0.0])
def test_blocked_conditioning_matches_the_dense_program(noise):
    X, y = sine_data(150, dim=3)
    if noise == 0.0:
        X, y = np.concatenate([X, X]), np.concatenate([y, y])  # singular without jitter
    process = StudentTProcess(NNGP(depth=3), noise=noise, noise_lower_bound=0.0).with_input_dim(3)
    data = pad_training_data(X, (y - y.mean()) / y.std())
    dense, solved_dense, q_dense = _condition_program(process, data)
    blocked, solved_blocked, q_blocked = process._condition_blocked(data, block_rows=64)
    assert bool(blocked.success)
    np.testing.assert_allclose(float(blocked.jitter), float(dense.jitter), rtol=1e-12)
    # With duplicates the last pivots are about 7e-7 (the jitter's square root), and the two
    # Gram computations round differently in the 9th digit there.
    tolerance = 1e-9 if noise else 1e-7
    np.testing.assert_allclose(blocked.factor, dense.factor, atol=tolerance)
    np.testing.assert_allclose(q_blocked, q_dense, rtol=1e-8 if noise else 1e-4)


@pytest.mark.slow
def test_large_training_sets_condition_through_the_blocked_path():
    X, y = sine_data(4200, dim=3, seed=2)
    process = GaussianProcess(RBF(lengthscale=0.3).with_input_dim(3), noise=0.01)
    posterior = process.condition(X, y)
    assert posterior.cholesky_factor.shape == (5120, 5120)
    data = posterior.data
    _, solved, _ = _condition_program(process, data)
    np.testing.assert_allclose(posterior.solved, solved, rtol=1e-6, atol=1e-8)


# -- choosing the approximation --------------------------------------------------------------


def test_auto_is_exact_up_to_the_threshold():
    assert large.choose_approximation(large.SPARSE_ABOVE) == "exact"
    assert large.choose_approximation(large.SPARSE_ABOVE + 1) == "sparse"
    assert large.choose_approximation(10, "sparse") == "sparse"
    with pytest.raises(ValueError, match="approximation must be"):
        large.choose_approximation(10, "nystrom")


@pytest.mark.slow
def test_fit_large_conditions_on_all_rows():
    X, y = sine_data(400, seed=9)
    process = GaussianProcess(RBF().with_input_dim(2), max_iterations=30, num_restarts=1)
    posterior = large.fit_large(
        process, X, y, key=jax.random.key(0), approximation="sparse", num_inducing=16, max_fit_points=100
    )
    assert isinstance(posterior, SparsePosterior)
    assert posterior.num_data == 400
    exact = large.fit_large(process, X, y, key=jax.random.key(0), approximation="exact", max_fit_points=100)
    assert exact.num_data == 400
    with pytest.raises(ValueError, match="max_fit_points"):
        large.fit_large(process, X, y, key=jax.random.key(0), max_fit_points=0)


def test_command_line_constants_match_the_library():
    # The command repeats these numbers so that `probnn fit --help` does not import JAX.
    assert fit_command.EXACT_FIT_POINTS == large.EXACT_FIT_POINTS
    assert fit_command.SPARSE_FIT_POINTS == large.SPARSE_FIT_POINTS
    assert fit_command.SPARSE_ABOVE == large.SPARSE_ABOVE
    assert fit_command.APPROXIMATIONS == large.APPROXIMATIONS
    assert fit_command.DEFAULT_NUM_INDUCING == sparse.DEFAULT_NUM_INDUCING
    assert fit_command.INDUCING_INITIALIZATIONS == inducing.INDUCING_INITIALIZATIONS


@pytest.mark.slow
def test_fit_command_runs_the_sparse_approximation(tmp_path):
    X, y = sine_data(300, dim=2, seed=11)
    data = tmp_path / "data.csv"
    data.write_text("a,b,y\n" + "\n".join(f"{a:.6f},{b:.6f},{c:.6f}" for (a, b), c in zip(X, y)) + "\n")
    out = tmp_path / "study"
    code = main([
        "fit", "--data", str(data), "--model", "tp-nngp", "--splits", "1", "--approximation", "sparse",
        "--num-inducing", "24", "--inducing-init", "kcenter", "--restarts", "1", "--max-iterations", "20",
        "--no-progress", "--out", str(out),
    ])
    assert code == 0
    record = json.loads((out / "runs.jsonl").read_text().splitlines()[0])
    assert record["approximation"] == "sparse"
    assert record["num_inducing"] == 24
    assert record["rmse"] < 0.5
    assert np.isfinite(record["nll"])


def test_blocked_factorisation_and_solves_match_lapack():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((300, 300))
    A = M @ M.T + 300.0 * np.eye(300)
    L = jax.jit(lambda A: linalg.blocked_cholesky(A, 64))(A)
    np.testing.assert_allclose(L, np.linalg.cholesky(A), atol=1e-12)
    B = rng.standard_normal((300, 4))
    np.testing.assert_allclose(linalg.blocked_solve_lower(L, B, 64), np.linalg.solve(L, B), atol=1e-12)
    np.testing.assert_allclose(
        linalg.blocked_solve_lower_transpose(L, B[:, 0], 64), np.linalg.solve(np.asarray(L).T, B[:, 0]), atol=1e-12
    )
    # Not positive definite: NaN, like jnp.linalg.cholesky, so the jitter search can react.
    assert np.isnan(np.asarray(jax.jit(lambda A: linalg.blocked_cholesky(A, 64))(-A))).any()
