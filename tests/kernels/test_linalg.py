"""Cholesky factorisation with escalating jitter, its warning and error, and its gradients."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from probnn.kernels import CholeskyError, NumericalWarning, cho_solve, cholesky, cholesky_with_jitter
from probnn.kernels.linalg import initial_jitter


# Compiled once, because an eager call traces and compiles the jitter search again
# each time (about 0.15 s per call on the 2-core test machine).
factorise = jax.jit(cholesky_with_jitter)


def well_conditioned_matrix(n: int = 5) -> np.ndarray:
    B = np.random.default_rng(0).normal(size=(n, n))
    return B @ B.T + n * np.eye(n)


def rank_one_matrix(n: int = 5) -> np.ndarray:
    return np.ones((n, n))


def test_well_conditioned_no_jitter():
    A = well_conditioned_matrix()

    result = factorise(jnp.asarray(A))

    assert float(result.jitter) == 0.0
    assert bool(result.success)
    np.testing.assert_allclose(np.tril(result.factor), result.factor)
    np.testing.assert_allclose(result.factor @ result.factor.T, A, rtol=1e-12)


def test_rank_deficient_positive_jitter():
    A = rank_one_matrix()

    result = factorise(jnp.asarray(A))
    jitter = float(result.jitter)

    assert bool(result.success)
    assert jitter > 0.0
    assert np.all(np.isfinite(result.factor))
    np.testing.assert_allclose(result.factor @ result.factor.T, A + jitter * np.eye(5), rtol=1e-10, atol=1e-12)
    # Levels are j0 * 10^k for k = 0, 1, ...
    exponent = np.log10(jitter / float(initial_jitter(jnp.asarray(A))))
    assert abs(exponent - round(exponent)) < 1e-9
    assert round(exponent) >= 0


def test_cholesky_warns_with_jitter():
    A = jnp.asarray(rank_one_matrix())
    jitter = float(factorise(A).jitter)

    with pytest.warns(NumericalWarning) as record:
        factor = cholesky(A, what="the test matrix")

    message = str(record[0].message)
    assert f"jitter {jitter:.3g}" in message
    assert "the test matrix" in message
    np.testing.assert_allclose(factor @ factor.T, A + jitter * jnp.eye(5), rtol=1e-10, atol=1e-12)


def test_cholesky_well_conditioned_silent():
    A = jnp.asarray(well_conditioned_matrix())

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        factor = cholesky(A)

    np.testing.assert_allclose(factor @ factor.T, A, rtol=1e-12)


def test_indefinite_raises():
    A = jnp.diag(jnp.array([1.0, -1.0]))

    with pytest.raises(CholeskyError, match="the prior covariance failed even with jitter"):
        cholesky(A, what="the prior covariance")


def test_indefinite_result_unsuccessful():
    result = factorise(jnp.diag(jnp.array([1.0, -1.0])))

    assert not bool(result.success)


def test_cholesky_error_is_value_error():
    assert issubclass(CholeskyError, ValueError)


def test_cho_solve():
    A = well_conditioned_matrix()
    b = np.arange(1.0, 6.0)

    x = cho_solve(cholesky(jnp.asarray(A)), jnp.asarray(b))

    np.testing.assert_allclose(A @ np.asarray(x), b, rtol=1e-12)


def log_det(A):
    factor = cholesky_with_jitter(A).factor
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(factor)))


@jax.jit
def log_det_derivative(A, direction):
    return jax.jvp(log_det, (A,), (direction,))[1]


def test_log_det_derivative_well_conditioned():
    A = well_conditioned_matrix()
    S = np.random.default_rng(1).normal(size=(5, 5))
    S = S + S.T

    derivative = log_det_derivative(jnp.asarray(A), jnp.asarray(S))

    # d log det(A) = tr(A^-1 dA) along a symmetric direction.
    np.testing.assert_allclose(derivative, np.trace(np.linalg.solve(A, S)), rtol=1e-10)


def test_log_det_gradient_finite():
    for A in (well_conditioned_matrix(), rank_one_matrix()):
        gradient = jax.jit(jax.grad(log_det))(jnp.asarray(A))

        assert np.all(np.isfinite(gradient))


def test_log_det_gradient_jittered():
    A = rank_one_matrix()
    jitter = float(factorise(jnp.asarray(A)).jitter)
    S = np.eye(5) + 0.1 * np.ones((5, 5))

    derivative = log_det_derivative(jnp.asarray(A), jnp.asarray(S))

    # The jitter is a constant, so the derivative is that of log det(A + jitter I). That
    # matrix has condition number about 2e15, so numpy's solve is only a rough reference.
    expected = np.trace(np.linalg.solve(A + jitter * np.eye(5), S))
    np.testing.assert_allclose(derivative, expected, rtol=1e-3)


def test_jit_matches_eager():
    for A in (well_conditioned_matrix(), rank_one_matrix()):
        eager = cholesky_with_jitter(jnp.asarray(A))
        compiled = factorise(jnp.asarray(A))

        np.testing.assert_array_equal(compiled.jitter, eager.jitter)
        np.testing.assert_allclose(compiled.factor, eager.factor, rtol=1e-12, atol=1e-14)


def test_vmap_mixed_batch():
    batch = jnp.stack([well_conditioned_matrix(), rank_one_matrix(), well_conditioned_matrix() + 1.0])

    results = jax.jit(jax.vmap(cholesky_with_jitter))(batch)

    for index in range(batch.shape[0]):
        single = factorise(batch[index])
        assert float(results.jitter[index]) == float(single.jitter)
        assert bool(results.success[index])
        np.testing.assert_allclose(results.factor[index], single.factor, rtol=1e-10, atol=1e-12)
    assert float(results.jitter[0]) == 0.0
    assert float(results.jitter[1]) > 0.0


def test_vmap_gradient_finite():
    batch = jnp.stack([well_conditioned_matrix(), rank_one_matrix()])

    gradients = jax.jit(jax.vmap(jax.grad(log_det)))(batch)

    assert np.all(np.isfinite(gradients))
