"""probnn kernels inside gpjax 1.0: Gram matrices, cross-covariances and the marginal likelihood."""

from __future__ import annotations

import equinox as eqx
import gpjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from probnn.kernels import NNGP, NTK, GPJaxKernel, Matern52, as_gpjax

OBSERVATION_STDDEV = 0.3

KERNEL_FACTORIES = {
    "nngp": lambda: NNGP(depth=2, activation="relu", bias_variance=0.2, variance=1.4, lengthscale=(0.5, 1.0, 2.0)),
    "ntk": lambda: NTK(depth=2, activation="erf", lengthscale=(0.5, 1.0, 2.0)),
    "matern52": lambda: Matern52(lengthscale=(0.5, 1.0, 2.0), variance=0.8),
}


def training_data():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1.0, 1.0, size=(12, 3))
    y = np.sin(3.0 * X[:, 0]) + 0.5 * X[:, 1] + OBSERVATION_STDDEV * rng.normal(size=12)
    return X, y


def conjugate_model(kernel):
    prior = gpjax.gps.Prior(mean_function=gpjax.mean_functions.Zero(), kernel=as_gpjax(kernel))
    return prior * gpjax.likelihoods.Gaussian(obs_stddev=OBSERVATION_STDDEV)


@eqx.filter_jit
def gpjax_and_probnn_matrices(kernel, X, split):
    """Return gpjax's Gram, cross-covariance and diagonal next to probnn's, in one program."""
    wrapped = as_gpjax(kernel)
    X1, X2 = X[:split], X[split:]
    return {
        "gram": (wrapped.gram(X).as_matrix(), kernel(X)),
        "cross": (wrapped.cross_covariance(X1, X2), kernel.cross(X1, X2)),
        "diagonal": (jnp.diagonal(wrapped.diagonal(X).as_matrix()), kernel.diag(X)),
    }


@pytest.fixture(scope="module", params=list(KERNEL_FACTORIES))
def matrices(request):
    X, _ = training_data()
    return gpjax_and_probnn_matrices(KERNEL_FACTORIES[request.param](), jnp.asarray(X), 7)


def test_gram_matches_probnn(matrices):
    gpjax_gram, probnn_gram = matrices["gram"]

    np.testing.assert_allclose(gpjax_gram, probnn_gram, rtol=1e-14)


def test_cross_covariance_matches_probnn(matrices):
    gpjax_cross, probnn_cross = matrices["cross"]

    assert gpjax_cross.shape == (7, 5)
    np.testing.assert_allclose(gpjax_cross, probnn_cross, rtol=1e-14)


def test_diagonal_matches_probnn(matrices):
    gpjax_diagonal, probnn_diagonal = matrices["diagonal"]

    np.testing.assert_allclose(gpjax_diagonal, probnn_diagonal, rtol=1e-14)


def test_pointwise_call_matches_cross():
    kernel = KERNEL_FACTORIES["nngp"]()
    X = jnp.asarray(training_data()[0])

    value, expected = eqx.filter_jit(lambda k: (as_gpjax(k)(X[0], X[1]), k.cross(X[:1], X[1:2])[0, 0]))(kernel)

    np.testing.assert_allclose(value, expected, rtol=1e-14)


def test_active_dims_slice_inputs():
    kernel = NNGP(depth=2, lengthscale=(0.5, 2.0))
    X = jnp.asarray(training_data()[0])

    gram, expected = eqx.filter_jit(
        lambda k: (GPJaxKernel(k, active_dims=[0, 2]).gram(X).as_matrix(), k(X[:, jnp.array([0, 2])]))
    )(kernel)

    np.testing.assert_allclose(gram, expected, rtol=1e-14)


def test_pointwise_call_active_dims():
    kernel = NNGP(depth=2)
    X = jnp.asarray(training_data()[0])
    columns = jnp.array([0, 2])

    value, expected = eqx.filter_jit(
        lambda k: (GPJaxKernel(k, active_dims=[0, 2])(X[0], X[1]), k.cross(X[:1, columns], X[1:2, columns])[0, 0])
    )(kernel)

    np.testing.assert_allclose(value, expected, rtol=1e-14)


def test_sum_kernel_gram():
    # gpjax's SumKernel evaluates its members pointwise through __call__.
    kernel = KERNEL_FACTORIES["nngp"]()
    X = jnp.asarray(training_data()[0])

    gram, expected = eqx.filter_jit(
        lambda k: ((as_gpjax(k) + gpjax.kernels.White(variance=0.1)).gram(X).as_matrix(), k(X) + 0.1 * jnp.eye(12))
    )(kernel)

    np.testing.assert_allclose(gram, expected, rtol=1e-12)


def test_non_probnn_kernel_rejected():
    with pytest.raises(ValueError, match="got RBF"):
        GPJaxKernel(gpjax.kernels.RBF())


@pytest.mark.parametrize("name", ["nngp", "matern52"])
def test_conjugate_mll_matches_scipy(name):
    kernel = KERNEL_FACTORIES[name]()
    X, y = training_data()
    data = gpjax.Dataset(X=jnp.asarray(X), y=jnp.asarray(y[:, None]))

    mll, K = eqx.filter_jit(lambda k: (gpjax.objectives.conjugate_mll(conjugate_model(k), data), k(data.X)))(kernel)

    # gpjax conditions on K + (jitter + sigma^2) I, with the prior's jitter (default 1e-6).
    jitter = conjugate_model(kernel).prior.jitter
    covariance = np.asarray(K) + (jitter + OBSERVATION_STDDEV**2) * np.eye(len(y))
    expected = scipy.stats.multivariate_normal(mean=np.zeros(len(y)), cov=covariance).logpdf(y)
    assert np.isfinite(float(mll))
    np.testing.assert_allclose(float(mll), expected, rtol=1e-10)


def test_conjugate_mll_gradient_finite():
    kernel = KERNEL_FACTORIES["nngp"]()
    X, y = training_data()
    data = gpjax.Dataset(X=jnp.asarray(X), y=jnp.asarray(y[:, None]))

    gradient = eqx.filter_jit(eqx.filter_grad(lambda k: gpjax.objectives.conjugate_mll(conjugate_model(k), data)))(
        kernel
    )

    leaves = jax.tree.leaves(gradient)
    assert len(leaves) == 4
    for leaf in leaves:
        assert np.all(np.isfinite(leaf))
