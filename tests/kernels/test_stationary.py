"""RBF and Matern-5/2 closed forms, and the kernel contract that every probnn kernel meets.

The contract tests run on the stationary kernels and on the NNGP and NTK kernels: exact
symmetry, positive semi-definiteness, a diagonal equal to ``diag``, cross-covariances
consistent with Gram blocks, and finite gradients, also at duplicated inputs.
"""

from __future__ import annotations

import equinox as eqx
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probnn.kernels import NNGP, NTK, RBF, Matern52

ARD_LENGTHSCALE = (0.8, 1.2, 2.0)

# Factories rather than instances, because the hyperparameters must be created after
# the session fixture has enabled float64.
KERNEL_FACTORIES = {
    "nngp-relu": lambda: NNGP(depth=2, activation="relu", bias_variance=0.2, variance=1.3, lengthscale=ARD_LENGTHSCALE),
    "nngp-erf": lambda: NNGP(depth=2, activation="erf", weight_variance=1.7, lengthscale=ARD_LENGTHSCALE),
    "ntk-relu": lambda: NTK(depth=2, activation="relu", weight_variance=1.5, lengthscale=ARD_LENGTHSCALE),
    "ntk-erf": lambda: NTK(depth=2, activation="erf", bias_variance=0.4, variance=0.7, lengthscale=ARD_LENGTHSCALE),
    "rbf": lambda: RBF(lengthscale=ARD_LENGTHSCALE, variance=1.8),
    "matern52": lambda: Matern52(lengthscale=ARD_LENGTHSCALE, variance=0.6),
}
KERNEL_NAMES = list(KERNEL_FACTORIES)

# At x = x' the NNGP recursion clips the correlation to 1 - 16 eps, which puts the
# ReLU angle at sqrt(32 eps) = 8.4e-8 instead of 0. The NTK's derivative factor
# (pi - theta) / (2 pi) moves by theta / pi per layer, so cross(X, X) has a diagonal
# 2e-8 to 4e-8 (relative) below diag(X), as measured at depths 2 and 3. The other
# kernels agree to rounding.
DIAGONAL_RTOL = {"ntk-relu": 2e-7}


def rbf_pointwise(x1, x2, lengthscale, variance):
    r2 = np.sum(((x1 - x2) / np.asarray(lengthscale)) ** 2)
    return variance * np.exp(-0.5 * r2)


def matern52_pointwise(x1, x2, lengthscale, variance):
    r = np.sqrt(np.sum(((x1 - x2) / np.asarray(lengthscale)) ** 2))
    return variance * (1.0 + np.sqrt(5.0) * r + 5.0 / 3.0 * r**2) * np.exp(-np.sqrt(5.0) * r)


def pointwise_matrix(function, X1, X2, **hyperparameters):
    return np.array([[function(a, b, **hyperparameters) for b in X2] for a in X1])


def inputs_with_duplicates() -> np.ndarray:
    """Return 9 inputs in 3 dimensions with a repeated row, an antipodal pair and the origin."""
    X = np.random.default_rng(0).normal(size=(9, 3))
    X[3] = X[1]
    X[5] = -X[0]
    X[7] = 0.0
    return X


@eqx.filter_jit
def evaluate(kernel, X1, X2=None):
    return kernel(X1, X2)


@eqx.filter_jit
def forward_quantities(kernel, X, split):
    """Return the Gram matrix, cross(X, X), diag and cross(X[:split], X[split:])."""
    return {
        "gram": kernel(X),
        "cross_same": kernel.cross(X, X),
        "diag": kernel.diag(X),
        "cross": kernel(X[:split], X[split:]),
    }


@eqx.filter_jit
def weighted_sum_and_gradient(kernel, X, gram_weights, cross_weights):
    """Return sum(Wg * k(X)) + sum(Wc * k.cross(X, X)) and its gradient.

    The gradient is taken with respect to every hyperparameter and to ``X``.
    cross(X, X) takes duplicated rows, and the diagonal, through the off-diagonal
    formula with x = x'.
    """
    hyperparameters, static = eqx.partition(kernel, eqx.is_inexact_array)

    def weighted_sum(params, inputs):
        k = eqx.combine(params, static)
        return jnp.sum(gram_weights * k(inputs)) + jnp.sum(cross_weights * k.cross(inputs, inputs))

    return jax.value_and_grad(weighted_sum, argnums=(0, 1))(hyperparameters, X)


def central_difference(kernel, X, weights, directions, step=1e-5):
    """Return the central difference of the weighted sum along ``directions``.

    ``directions`` is a pair (hyperparameter pytree, input array).
    """
    hyperparameters, static = eqx.partition(kernel, eqx.is_inexact_array)
    values = []
    for sign in (1.0, -1.0):
        params, inputs = jax.tree.map(lambda p, d: p + sign * step * d, (hyperparameters, X), directions)
        value, _ = weighted_sum_and_gradient(eqx.combine(params, static), inputs, *weights)
        values.append(float(value))
    return (values[0] - values[1]) / (2.0 * step)


@pytest.fixture(scope="module", params=KERNEL_NAMES)
def contract(request):
    kernel = KERNEL_FACTORIES[request.param]()
    X = jnp.asarray(inputs_with_duplicates())
    quantities = dict(forward_quantities(kernel, X, 5))

    # A non-finite gradient of either term makes the gradient of their sum non-finite.
    ones = jnp.ones((X.shape[0], X.shape[0]))
    _, (quantities["hyperparameter_gradient"], quantities["input_gradient"]) = weighted_sum_and_gradient(
        kernel, X, ones, ones
    )

    # Distinct generic inputs of the same shape, so the compiled gradient program is
    # reused. The diagonal of cross(X, X) gets weight zero. In the second layer of the
    # ReLU NTK, the clipped correlation of that entry lies at the edge of the clipping
    # band, so rounding moves the entry by up to 3e-10 (relative) between nearby inputs.
    # A central difference with step 1e-5 magnifies that to a relative error of 3e-6
    # (measured).
    rng = np.random.default_rng(1)
    generic_X = jnp.asarray(rng.normal(size=X.shape))
    off_diagonal = 1.0 - np.eye(X.shape[0])
    weights = (jnp.asarray(rng.normal(size=ones.shape)), jnp.asarray(off_diagonal * rng.normal(size=ones.shape)))
    hyperparameters = eqx.filter(kernel, eqx.is_inexact_array)
    # Hyperparameter directions scaled by the value keep every perturbed value positive.
    directions = (
        jax.tree.map(lambda leaf: leaf * jnp.asarray(rng.uniform(-1.0, 1.0, leaf.shape)), hyperparameters),
        jnp.asarray(rng.normal(size=X.shape)),
    )
    _, gradient = weighted_sum_and_gradient(kernel, generic_X, *weights)
    quantities["directional_derivative"] = sum(
        float(jnp.vdot(g, d)) for g, d in zip(jax.tree.leaves(gradient), jax.tree.leaves(directions))
    )
    quantities["central_difference"] = central_difference(kernel, generic_X, weights, directions)
    return request.param, kernel, quantities


def test_gram_symmetric_exactly(contract):
    _, _, quantities = contract
    K = np.asarray(quantities["gram"])

    np.testing.assert_array_equal(K, K.T)


def test_gram_positive_semidefinite(contract):
    _, _, quantities = contract

    eigenvalues = np.linalg.eigvalsh(np.asarray(quantities["gram"]))

    assert eigenvalues.min() >= -1e-10 * eigenvalues.max()


def test_cross_diagonal_matches_diag(contract):
    name, _, quantities = contract

    cross_diagonal = np.diagonal(np.asarray(quantities["cross_same"]))

    np.testing.assert_allclose(cross_diagonal, quantities["diag"], rtol=DIAGONAL_RTOL.get(name, 1e-12))


def test_gram_diagonal_is_diag(contract):
    _, _, quantities = contract

    np.testing.assert_array_equal(np.diagonal(np.asarray(quantities["gram"])), quantities["diag"])


def test_cross_shape_and_gram_blocks(contract):
    _, _, quantities = contract
    cross = np.asarray(quantities["cross"])

    assert cross.shape == (5, 4)
    np.testing.assert_allclose(cross, np.asarray(quantities["gram"])[:5, 5:], rtol=1e-12, atol=1e-14)


def test_gradient_inputs_finite(contract):
    _, _, quantities = contract

    assert np.all(np.isfinite(quantities["input_gradient"]))


def test_gradient_hyperparameters_finite(contract):
    _, kernel, quantities = contract
    leaves = jax.tree.leaves(quantities["hyperparameter_gradient"])

    assert len(leaves) == len(jax.tree.leaves(eqx.filter(kernel, eqx.is_inexact_array)))
    for leaf in leaves:
        assert np.all(np.isfinite(leaf))


def test_gradient_matches_finite_differences(contract):
    _, _, quantities = contract

    # With step 1e-5 the truncation error is O(1e-10) and the rounding error
    # O(eps / 1e-5) = O(1e-11), relative to the scale of the weighted sum.
    np.testing.assert_allclose(quantities["directional_derivative"], quantities["central_difference"], rtol=1e-6)


@pytest.mark.parametrize("name", KERNEL_NAMES)
@settings(max_examples=10, deadline=None)
@given(X=hnp.arrays(np.float64, (9, 3), elements=st.floats(-3.0, 3.0, allow_subnormal=False)))
def test_gram_symmetric_psd_random(name, X):
    kernel = KERNEL_FACTORIES[name]()
    # The inputs have the shape of inputs_with_duplicates, so the compiled program of the
    # contract fixture is reused.
    K = np.asarray(forward_quantities(kernel, jnp.asarray(X), 5)["gram"])

    eigenvalues = np.linalg.eigvalsh(K)

    np.testing.assert_array_equal(K, K.T)
    assert eigenvalues.min() >= -1e-10 * eigenvalues.max()


@pytest.mark.parametrize(
    ("kernel_class", "pointwise"), [(RBF, rbf_pointwise), (Matern52, matern52_pointwise)], ids=["rbf", "matern52"]
)
def test_closed_form_ard(kernel_class, pointwise):
    rng = np.random.default_rng(3)
    X1 = rng.normal(size=(6, 3))
    X2 = np.concatenate([rng.normal(size=(4, 3)), X1[:1], X1[1:2] + 1e-3])
    lengthscale = (0.3, 1.1, 4.0)
    kernel = kernel_class(lengthscale=lengthscale, variance=2.2)

    expected = pointwise_matrix(pointwise, X1, X2, lengthscale=lengthscale, variance=2.2)

    # The matrix form expands |a - b|^2 = |a|^2 + |b|^2 - 2 a.b, which loses about
    # eps * |a|^2 in absolute terms near r = 0.
    np.testing.assert_allclose(evaluate(kernel, jnp.asarray(X1), jnp.asarray(X2)), expected, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kernel_class", [RBF, Matern52])
def test_closed_form_scalar_lengthscale(kernel_class):
    X = np.random.default_rng(4).normal(size=(5, 2))
    pointwise = rbf_pointwise if kernel_class is RBF else matern52_pointwise

    expected = pointwise_matrix(pointwise, X, X, lengthscale=0.9, variance=1.0)

    np.testing.assert_allclose(evaluate(kernel_class(lengthscale=0.9), jnp.asarray(X)), expected, rtol=1e-10, atol=1e-13)


@jax.jit
def matern52_point_gradient(kernel, x, x0):
    """Return the gradients of k(x, x0) in the hyperparameters and in x."""

    def covariance(k, point):
        return k.cross(point[None, :], x0[None, :])[0, 0]

    return jax.grad(covariance, argnums=(0, 1))(kernel, x)


def test_matern52_gradient_at_zero_distance():
    kernel = Matern52(lengthscale=ARD_LENGTHSCALE, variance=1.5)
    x0 = jnp.asarray([0.3, -1.2, 0.7])

    hyperparameter_gradient, input_gradient = matern52_point_gradient(kernel, x0, x0)

    # k is smooth in r^2, so dk/dx = 0 at r = 0. The lengthscale does not enter at r = 0,
    # and dk/dv = k / v = 1.
    np.testing.assert_allclose(input_gradient, 0.0, atol=1e-12)
    np.testing.assert_allclose(hyperparameter_gradient.lengthscale, 0.0, atol=1e-12)
    np.testing.assert_allclose(hyperparameter_gradient.variance, 1.0, rtol=1e-12)


def test_matern52_gradient_near_zero_distance():
    lengthscale = np.asarray(ARD_LENGTHSCALE)
    kernel = Matern52(lengthscale=lengthscale, variance=1.5)
    x0 = np.array([0.3, -1.2, 0.7])
    x = x0 + np.array([1e-3, -2e-3, 5e-4])

    _, gradient = matern52_point_gradient(kernel, jnp.asarray(x), jnp.asarray(x0))

    # dk/dx = -(5 / 3) v (1 + sqrt(5) r) exp(-sqrt(5) r) (x - x0) / l^2.
    r = np.sqrt(np.sum(((x - x0) / lengthscale) ** 2))
    expected = -5.0 / 3.0 * 1.5 * (1.0 + np.sqrt(5.0) * r) * np.exp(-np.sqrt(5.0) * r) * (x - x0) / lengthscale**2
    np.testing.assert_allclose(gradient, expected, rtol=1e-6)


@pytest.mark.parametrize("kernel_class", [RBF, Matern52])
def test_negative_lengthscale(kernel_class):
    with pytest.raises(ValueError, match=r"lengthscale must be positive and finite, got \[1.0, -2.0\]"):
        kernel_class(lengthscale=[1.0, -2.0])


@pytest.mark.parametrize("kernel_class", [RBF, Matern52])
def test_negative_variance(kernel_class):
    with pytest.raises(ValueError, match="variance must be positive and finite, got -1.0"):
        kernel_class(variance=-1.0)


@pytest.mark.parametrize("kernel_class", [RBF, Matern52])
def test_with_input_dim_lengthscale_length(kernel_class):
    kernel = kernel_class(lengthscale=[1.0, 2.0, 3.0])

    with pytest.raises(ValueError, match="lengthscale has 3 entries but the inputs have 2 dimensions"):
        kernel.with_input_dim(2)


@pytest.mark.parametrize("kernel_class", [RBF, Matern52])
def test_with_input_dim_scalar_lengthscale(kernel_class):
    kernel = kernel_class(lengthscale=0.4, variance=2.0).with_input_dim(3)

    np.testing.assert_array_equal(kernel.lengthscale, [0.4, 0.4, 0.4])
    assert float(kernel.variance) == 2.0
