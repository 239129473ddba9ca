"""The PFN as a fit/predict model inside Bayesian optimization's acquisition search."""

import jax.numpy as jnp
import numpy as np
import pytest

from probnn.bo.loop import BayesianOptimization, _acquisition_values, _AcquisitionParams
from probnn.bo.optimize import optimize_acquisition
from probnn.pfn import BarDistribution, PFNModel

RNG = np.random.default_rng(1)
X = RNG.uniform(size=(10, 2))
Y = 3.0 + 10.0 * np.sum((X - 0.3) ** 2, axis=1)


@pytest.fixture(scope="module")
def posterior(tiny_hyper_pfn):
    return PFNModel(tiny_hyper_pfn).fit(X, Y)


def test_pfn_model_predicts_bar_distribution(posterior):
    assert isinstance(posterior.predict(RNG.uniform(size=(4, 2))), BarDistribution)


def test_pfn_model_reports_in_target_units(posterior):
    # Targets are standardised inside; the predictive mean comes back near the data's scale.
    mean = np.asarray(posterior.predict(X).mean)
    assert abs(mean.mean() - Y.mean()) < 2 * Y.std()


def test_pfn_model_posterior_keeps_model(posterior, tiny_hyper_pfn):
    assert posterior.model.pfn is tiny_hyper_pfn


# Each kind compiles an L-BFGS search through the transformer: about 10 s each.
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["logei", "ucb", "pi"])
def test_pfn_acquisition_optimum_inside_cube(posterior, kind):
    params = _AcquisitionParams(posterior, jnp.asarray(Y.min()), jnp.asarray(2.0), kind=kind)
    candidates = optimize_acquisition(_acquisition_values, params, 2, seed=0, num_raw_samples=64, num_starts=2,
                                      max_iterations=10)
    assert np.all((candidates.X >= 0.0) & (candidates.X <= 1.0))


@pytest.mark.slow
def test_pfn_acquisition_values_finite(posterior):
    params = _AcquisitionParams(posterior, jnp.asarray(Y.min()), jnp.asarray(2.0), kind="logei")
    values = _acquisition_values(params, jnp.asarray(RNG.uniform(size=(16, 2))))
    assert bool(jnp.all(jnp.isfinite(values)))


def test_pfn_model_rejects_inputs_outside_cube(tiny_hyper_pfn):
    with pytest.raises(ValueError, match="unit cube"):
        PFNModel(tiny_hyper_pfn).fit(X * 3.0, Y)


def test_pfn_model_rejects_too_many_points(tiny_hyper_pfn):
    with pytest.raises(ValueError, match="max_train_points = 15"):
        PFNModel(tiny_hyper_pfn).fit(RNG.uniform(size=(16, 2)), np.zeros(16))


def test_pfn_model_has_no_joint_samples(posterior):
    with pytest.raises(NotImplementedError, match="Thompson"):
        posterior.sample_functions(None, X, 1)


def test_bo_loop_rejects_thompson_for_pfn():
    with pytest.raises(ValueError, match="marginals only"):
        BayesianOptimization([[0.0, 1.0]], surrogate="pfn", acquisition="ts")
