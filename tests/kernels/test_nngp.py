"""NNGP and NTK kernels checked against Monte Carlo estimates from finite random networks.

The finite network below follows the parameterisation in the docstring of
``probnn.kernels.nngp``: ``depth`` hidden layers of width ``n``,

    h^1 = sqrt(w / d) W^1 (x / l) + sqrt(b) b^1,
    h^{k+1} = sqrt(w / n) W^{k+1} phi(h^k) + sqrt(b) b^{k+1},
    f(x) = sqrt(v) (sqrt(w / n) W^{L+1} phi(h^L) + sqrt(b) b^{L+1}),

with standard normal weights and biases. Over random networks, E[f(x) f(x')] tends to
the NNGP kernel and the empirical NTK J(x) J(x')^T tends to the NTK as the width grows.
J is the gradient of f with respect to every weight and bias.

Each network gives three estimates at the probe inputs: the second moment of its
sampled outputs, the same moment with the readout weights integrated out exactly (a
lower-variance estimate of the NNGP), and its empirical NTK.

Tolerances. Each check compares the mean of ``S`` independent per-network estimates
with the kernel, entry by entry, and allows

    |mean - kernel| <= 5 * SE + (depth - 1) / width * max|kernel|.

SE is the standard error of the mean, taken from the spread of the ``S`` estimates.
The second term allows for the finite-width bias. With one hidden layer the hidden units
are independent, so every estimate is unbiased and the term is zero. For deeper networks
the bias is O(1 / width). At width 16 and depth 3 the measured bias was at most 2.2% of
max|kernel| over all three estimates and both activations (20,000 networks), under a
fifth of the allowance 2 / 16 at that width.

With S >= 400 the standardised error is close to normal and P(|z| > 5) = 5.7e-7 per
entry. The default checks compare 4 cases x 3 estimates x 28 distinct entries, so they
fail by chance with probability below 2e-4 for a random seed. The seeds are fixed, so a
run is reproducible.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import erf

from probnn.kernels import NNGP, NTK

ACTIVATION_FUNCTIONS = {"relu": jax.nn.relu, "erf": erf}

# Non-default hyperparameters, so a swapped or dropped scale changes the kernel.
HYPERPARAMETERS = {
    "relu": {"weight_variance": 1.6, "bias_variance": 0.3, "variance": 2.5},
    "erf": {"weight_variance": 2.5, "bias_variance": 0.2, "variance": 1.7},
}
LENGTHSCALE = (0.7, 1.5, 2.5)

# Width, number of networks and readout units per network for the default checks.
# At depth 3 the per-network spread of the conditional NNGP and NTK estimates is at most
# about 3.3 / sqrt(width) of max|kernel| (measured at widths 128, 1024 and 2048). The
# standard error therefore scales as 1 / sqrt(width * networks) while the cost grows as
# width^2 * networks, so many networks of width 128 give a tighter check than a few of
# width 2048 at the same cost. The slow tests repeat the checks at width 1024 and 2048.
DEFAULT_DRAWS = {
    1: {"width": 1024, "num_networks": 400, "num_outputs": 32},
    3: {"width": 128, "num_networks": 1024, "num_outputs": 64},
}
Z_LIMIT = 5.0


def probe_inputs() -> np.ndarray:
    """Return 7 inputs in 3 dimensions that cover the hard cases of the recursion.

    Rows 0 and 1 are equal (correlation exactly 1). Row 2 is nearly antipodal to row 0
    (correlation near -1). Row 4 is twice row 3, so it has the same direction but another
    norm. Row 5 is close to the origin, where the bias variance dominates.
    """
    x0 = np.array([0.9, -0.4, 1.3])
    x3 = np.array([-0.5, 1.1, 0.6])
    return np.stack(
        [
            x0,
            x0,
            -0.97 * x0 + np.array([0.02, -0.01, 0.03]),
            x3,
            2.0 * x3,
            np.array([0.05, 0.02, -0.04]),
            np.array([1.7, 0.8, -1.2]),
        ]
    )


def make_kernel(kernel_class, activation: str, depth: int):
    return kernel_class(
        depth=depth,
        activation=activation,
        lengthscale=np.array(LENGTHSCALE),
        **HYPERPARAMETERS[activation],
    )


def init_network(key, input_dim: int, width: int, depth: int, num_outputs: int):
    """Draw the standard normal weights ``(fan_in, fan_out)`` and biases of every layer.

    One normal draw is split into all layers, so the program compiles one generator.
    """
    sizes = [input_dim] + [width] * depth + [num_outputs]
    shapes = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        shapes.append(((fan_in, fan_out), (fan_out,)))
    total = sum(fan_in * fan_out + fan_out for (fan_in, fan_out), _ in shapes)
    draws = jax.random.normal(key, (total,), jnp.float64)

    layers = []
    start = 0
    for weight_shape, bias_shape in shapes:
        weight_size = weight_shape[0] * weight_shape[1]
        weight = draws[start : start + weight_size].reshape(weight_shape)
        bias = draws[start + weight_size : start + weight_size + bias_shape[0]]
        layers.append((weight, bias))
        start += weight_size + bias_shape[0]
    return layers


def last_hidden_layer(hidden_layers, X, activation: str):
    """Return phi(h^L) at every input, shape ``(P, width)``."""
    phi = ACTIVATION_FUNCTIONS[activation]
    hyper = HYPERPARAMETERS[activation]

    h = X / jnp.asarray(LENGTHSCALE)
    for index, (weight, bias) in enumerate(hidden_layers):
        if index > 0:
            h = phi(h)
        # fan_in is d for the first layer and the width afterwards.
        fan_in = weight.shape[0]
        h = jnp.sqrt(hyper["weight_variance"] / fan_in) * (h @ weight) + jnp.sqrt(hyper["bias_variance"]) * bias
    return phi(h)


def network_outputs(layers, X, activation: str):
    """Evaluate the network of the module docstring, with one output column per readout unit."""
    hyper = HYPERPARAMETERS[activation]
    *hidden_layers, (weight, bias) = layers
    features = last_hidden_layer(hidden_layers, X, activation)
    width = weight.shape[0]
    readout = jnp.sqrt(hyper["weight_variance"] / width) * (features @ weight) + jnp.sqrt(hyper["bias_variance"]) * bias
    return jnp.sqrt(hyper["variance"]) * readout


def conditional_covariance(features, activation: str):
    """Return E[f f^T | hidden layers] = v (w / n phi phi^T + b), with the readout integrated out."""
    hyper = HYPERPARAMETERS[activation]
    width = features.shape[1]
    second_moment = hyper["weight_variance"] / width * (features @ features.T) + hyper["bias_variance"]
    return hyper["variance"] * second_moment


def empirical_ntk(layers, X, activation: str):
    """Compute J J^T, where J is the Jacobian of the scalar output with respect to all parameters."""
    jacobian = jax.jacrev(lambda params: network_outputs(params, X, activation)[:, 0])(layers)
    num_inputs = X.shape[0]
    blocks = [leaf.reshape(num_inputs, -1) for leaf in jax.tree.leaves(jacobian)]
    return sum(block @ block.T for block in blocks)


class NetworkEstimates(NamedTuple):
    """Per-network estimates, each of shape ``(num_networks, P, P)``."""

    sampled: np.ndarray  # mean of f f^T over the readout units of each network
    conditional: np.ndarray  # E[f f^T | hidden layers]
    ntk: np.ndarray  # J J^T of the first readout unit


@functools.partial(jax.jit, static_argnames=("activation", "depth", "width", "num_outputs"))
def _network_estimates(keys, X, activation, depth, width, num_outputs):
    def one_network(key):
        layers = init_network(key, X.shape[1], width, depth, num_outputs)
        outputs = network_outputs(layers, X, activation)
        # The outputs have mean zero, so the uncentred second moment estimates the
        # covariance without bias. Readout units share the hidden layers, so they are
        # averaged within a network and only networks count as independent draws.
        sampled = outputs @ outputs.T / num_outputs

        *hidden_layers, (readout_weight, readout_bias) = layers
        conditional = conditional_covariance(last_hidden_layer(hidden_layers, X, activation), activation)

        # The first readout unit alone is a network of the docstring's form.
        single_output = [*hidden_layers, (readout_weight[:, :1], readout_bias[:1])]
        return sampled, conditional, empirical_ntk(single_output, X, activation)

    # Batches of 8 small networks run faster. Wide networks go one at a time, because the
    # Jacobian of each has 7 * 2 width^2 entries (470 MB at width 2048).
    return jax.lax.map(one_network, keys, batch_size=8 if width <= 256 else 1)


def network_estimates(activation, depth, width, num_networks, num_outputs, seed) -> NetworkEstimates:
    keys = jax.random.split(jax.random.key(seed), num_networks)
    estimates = _network_estimates(keys, jnp.asarray(probe_inputs()), activation, depth, width, num_outputs)
    return NetworkEstimates(*(np.asarray(estimate) for estimate in estimates))


def assert_matches_monte_carlo(estimates, kernel_matrix, depth, width):
    """Assert that the mean of the per-network estimates is within the module docstring's tolerance."""
    num_networks = estimates.shape[0]
    mean = estimates.mean(axis=0)
    standard_error = estimates.std(axis=0, ddof=1) / np.sqrt(num_networks)
    bias_allowance = (depth - 1) / width * np.max(np.abs(kernel_matrix))
    tolerance = Z_LIMIT * standard_error + bias_allowance
    error = np.abs(mean - kernel_matrix)
    worst = np.unravel_index(np.argmax(error / tolerance), error.shape)
    assert np.all(error <= tolerance), (
        f"entry {worst}: Monte Carlo {mean[worst]:.5g} +- {standard_error[worst]:.2g} (SE), "
        f"kernel {kernel_matrix[worst]:.5g}, allowed difference {tolerance[worst]:.2g}"
    )


def kernel_at_probes(kernel_class, activation: str, depth: int) -> np.ndarray:
    kernel = make_kernel(kernel_class, activation, depth)
    return np.asarray(eqx.filter_jit(lambda k, X: k(X))(kernel, jnp.asarray(probe_inputs())))


MONTE_CARLO_CASES = [("relu", 1), ("relu", 3), ("erf", 1), ("erf", 3)]


@pytest.fixture(scope="module", params=MONTE_CARLO_CASES, ids=[f"{a}-depth{d}" for a, d in MONTE_CARLO_CASES])
def default_draws(request):
    activation, depth = request.param
    return activation, depth, network_estimates(activation, depth, seed=0, **DEFAULT_DRAWS[depth])


def test_nngp_sampled_outputs(default_draws):
    activation, depth, estimates = default_draws
    width = DEFAULT_DRAWS[depth]["width"]

    assert_matches_monte_carlo(estimates.sampled, kernel_at_probes(NNGP, activation, depth), depth, width)


def test_nngp_conditional_covariance(default_draws):
    activation, depth, estimates = default_draws
    width = DEFAULT_DRAWS[depth]["width"]

    assert_matches_monte_carlo(estimates.conditional, kernel_at_probes(NNGP, activation, depth), depth, width)


def test_ntk_monte_carlo(default_draws):
    activation, depth, estimates = default_draws
    width = DEFAULT_DRAWS[depth]["width"]

    assert_matches_monte_carlo(estimates.ntk, kernel_at_probes(NTK, activation, depth), depth, width)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_monte_carlo_width_1024(activation):
    width = 1024
    estimates = network_estimates(activation, 3, width, num_networks=128, num_outputs=256, seed=1)

    nngp = kernel_at_probes(NNGP, activation, 3)
    assert_matches_monte_carlo(estimates.sampled, nngp, 3, width)
    assert_matches_monte_carlo(estimates.conditional, nngp, 3, width)
    assert_matches_monte_carlo(estimates.ntk, kernel_at_probes(NTK, activation, 3), 3, width)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_ntk_monte_carlo_width_2048(activation):
    # The per-network spread of the empirical NTK at this width is 5% to 6% of max|NTK|
    # (measured), so 16 networks give SE of about 1.5%. With 15 degrees of freedom
    # P(|t| > 5) = 1.6e-4 per entry, below 1% over the 56 entries of both activations.
    width = 2048
    estimates = network_estimates(activation, 3, width, num_networks=16, num_outputs=1, seed=2)

    assert_matches_monte_carlo(estimates.ntk, kernel_at_probes(NTK, activation, 3), 3, width)


@jax.jit
def readout_ntk_and_conditional_covariance(key, X):
    *hidden_layers, readout = init_network(key, X.shape[1], 64, 2, 1)
    jacobian = jax.jacrev(lambda params: network_outputs([*hidden_layers, params], X, "erf")[:, 0])(readout)
    blocks = [leaf.reshape(X.shape[0], -1) for leaf in jax.tree.leaves(jacobian)]
    readout_ntk = sum(block @ block.T for block in blocks)
    return readout_ntk, conditional_covariance(last_hidden_layer(hidden_layers, X, "erf"), "erf")


def test_readout_ntk_is_conditional_covariance():
    # The readout block of J J^T is v (w / n phi phi^T + b), so network_outputs and
    # conditional_covariance agree on the scaling of the last layer.
    readout_ntk, expected = readout_ntk_and_conditional_covariance(jax.random.key(3), jnp.asarray(probe_inputs()))

    np.testing.assert_allclose(readout_ntk, expected, rtol=1e-12)


@pytest.mark.parametrize("kernel_class", [NNGP, NTK])
def test_activation_invalid(kernel_class):
    with pytest.raises(ValueError, match="'tanh'"):
        kernel_class(activation="tanh")


@pytest.mark.parametrize("kernel_class", [NNGP, NTK])
@pytest.mark.parametrize("depth", [0, -2, 1.5, True])
def test_depth_invalid(kernel_class, depth):
    with pytest.raises(ValueError, match=f"got {depth!r}"):
        kernel_class(depth=depth)


def test_depth_numpy_integer():
    kernel = NNGP(depth=np.int64(2))

    assert kernel.depth == 2


@pytest.mark.parametrize("name", ["variance", "weight_variance", "bias_variance", "lengthscale"])
def test_negative_hyperparameter(name):
    with pytest.raises(ValueError, match=f"{name} must be positive and finite, got -0.5"):
        NNGP(**{name: -0.5})


def test_nonscalar_variance():
    with pytest.raises(ValueError, match=r"variance must be a scalar, got shape \(2,\)"):
        NNGP(variance=[1.0, 2.0])


def test_with_input_dim_lengthscale_length():
    kernel = NNGP(lengthscale=[1.0, 2.0])

    with pytest.raises(ValueError, match="lengthscale has 2 entries but the inputs have 3 dimensions"):
        kernel.with_input_dim(3)


def test_with_input_dim_scalar_lengthscale():
    kernel = NTK(depth=2, lengthscale=0.5).with_input_dim(3)

    np.testing.assert_array_equal(kernel.lengthscale, [0.5, 0.5, 0.5])


def test_default_weight_variance():
    assert float(NNGP(activation="relu").weight_variance) == 2.0
    assert float(NNGP(activation="erf").weight_variance) == 1.0


def test_kernel_is_pytree_of_hyperparameters():
    kernel = make_kernel(NNGP, "erf", 2)

    leaves = jax.tree.leaves(eqx.filter(kernel, eqx.is_inexact_array))

    assert len(leaves) == 4
