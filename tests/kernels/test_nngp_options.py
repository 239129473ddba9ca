"""Tests of the NNGP options used by the BO surrogates: input offset and normalisation."""

import jax.numpy as jnp
import numpy as np
import pytest

from probnn.kernels import NNGP, NTK


@pytest.fixture
def inputs():
    return jnp.asarray(np.random.default_rng(3).uniform(size=(7, 3)))


def test_offset_equals_shifted_inputs(inputs):
    shifted = NNGP(depth=2, input_offset=0.5)(inputs)
    reference = NNGP(depth=2)(inputs - 0.5)
    np.testing.assert_allclose(shifted, reference, rtol=1e-13)


def test_offset_applies_to_ntk(inputs):
    np.testing.assert_allclose(NTK(depth=2, input_offset=0.5)(inputs), NTK(depth=2)(inputs - 0.5), rtol=1e-13)


def test_normalized_is_correlation(inputs):
    raw = NNGP(depth=3, variance=1.0)(inputs)
    kernel = NNGP(depth=3, variance=2.5, normalize=True)
    K = kernel(inputs)
    scale = np.sqrt(np.diag(raw))
    np.testing.assert_allclose(K, 2.5 * raw / np.outer(scale, scale), rtol=1e-12)
    np.testing.assert_allclose(kernel.diag(inputs), 2.5, rtol=1e-15)


def test_normalized_cross_matches_gram(inputs):
    kernel = NNGP(depth=3, normalize=True, input_offset=0.5).with_input_dim(3)
    np.testing.assert_allclose(kernel.cross(inputs[:3], inputs), kernel(inputs)[:3], rtol=1e-12, atol=1e-15)


def test_normalized_positive_semidefinite(inputs):
    K = np.asarray(NNGP(depth=3, normalize=True, input_offset=0.5)(inputs))
    eigenvalues = np.linalg.eigvalsh(K)
    assert eigenvalues.min() >= -1e-10 * eigenvalues.max()
