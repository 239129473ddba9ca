"""The numpyro BNN models: the prior they encode and the plug-in likelihood."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer import Predictive

from probnn.bnn.models import NetworkPrior, bnn_regression, plugin_regression
from probnn.samplers.mcmc import NumpyroTarget, SamplerSettings, initial_positions, sample


def test_prior_output_variance_matches_the_one_layer_formula():
    # f(x) = sum_j w_j tanh(u_j) + b with w_j ~ N(0, s_w^2 / H), u_j ~ N(0, s_w^2 x^2 + s_b^2),
    # so Var f(x) = s_w^2 E[tanh(u)^2] + s_b^2; E[.] by Gauss-Hermite quadrature.
    prior = NetworkPrior(widths=(64,), weight_scale=1.5, bias_scale=0.5, noise=0.1)
    X = jnp.array([[0.0], [1.0], [2.5]])
    draws = Predictive(bnn_regression, num_samples=20000)(
        jax.random.key(0), X, None, jnp.ones(3, bool), prior
    )["y"]
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    for i, x in enumerate(np.asarray(X)[:, 0]):
        u_sd = np.sqrt(1.5**2 * x**2 + 0.5**2)
        expected = 1.5**2 * np.sum(weights * np.tanh(u_sd * nodes) ** 2) / np.sqrt(2 * np.pi) + 0.5**2 + 0.1**2
        observed = float(np.var(np.asarray(draws[:, i])))
        # The sample variance of 20,000 draws of a heavy-ish tailed variable has a relative
        # standard error of about 1.5%; 6% is four standard errors.
        assert observed == pytest.approx(expected, rel=0.06)


@pytest.mark.slow
def test_plugin_likelihood_recovers_scale_offset_and_noise():
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.uniform(-2, 2, size=(80, 1)))
    mean_function = lambda X: jnp.sin(2.0 * X[:, 0])
    y = 2.0 * mean_function(X) + 0.5 + 0.1 * jnp.asarray(rng.normal(size=80))
    mask = jnp.ones(80, bool)
    target = NumpyroTarget(plugin_regression, (X, y, mask, mean_function), {})
    start = initial_positions(target, jax.random.key(1), 2)
    result = jax.jit(lambda key, p: sample(key, target.logdensity, p, SamplerSettings(num_warmup=300, num_samples=300)))(
        jax.random.key(2), start
    )
    draws = jax.vmap(jax.vmap(target.constrain))(result.positions)
    # Posterior standard deviations at n = 80 are about 0.016 (scale), 0.011 (offset) and
    # 0.008 (noise); the tolerances are about four of them.
    assert float(jnp.mean(draws["scale"])) == pytest.approx(2.0, abs=0.06)
    assert float(jnp.mean(draws["offset"])) == pytest.approx(0.5, abs=0.05)
    assert float(jnp.mean(draws["noise"])) == pytest.approx(0.1, abs=0.03)


def test_network_prior_rejects_bad_values():
    with pytest.raises(ValueError, match="weight_scale"):
        NetworkPrior(weight_scale=0.0).check()
    with pytest.raises(ValueError, match="widths"):
        NetworkPrior(widths=(0,)).check()
    # No hidden layer is Bayesian linear regression, a valid model.
    assert NetworkPrior(widths=()).check().layer_sizes(3) == (3, 1)
    with pytest.raises(ValueError, match="noise"):
        NetworkPrior(noise=-1.0).check()
    with pytest.raises(ValueError, match="noise_floor"):
        NetworkPrior(noise_floor=float("nan")).check()
