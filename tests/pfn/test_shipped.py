"""The checkpoints shipped in the package: quality on their own priors, and their uses."""

import numpy as np
import pytest

from probnn.bo.loop import BayesianOptimization
from probnn.bo.problems import get_problem
from probnn.cli.main import main
from probnn.integrations.sklearn import PFNRegressor
from probnn.pfn import SHIPPED_CHECKPOINTS, load_pfn
from probnn.pfn.evaluate import evaluate_pfn
from probnn.priors.tasks import make_task_prior


@pytest.mark.parametrize("name", sorted(SHIPPED_CHECKPOINTS))
def test_shipped_checkpoint_records_prior(name):
    assert load_pfn(name).metadata["prior_name"] == name


@pytest.fixture(scope="module")
def rbf_result():
    # 300 datasets from another seed than the acceptance run (seed 12345).
    return evaluate_pfn(load_pfn("gp-rbf-1d"), make_task_prior("gp-rbf-1d"), num_datasets=300, seed=7)


@pytest.mark.slow
def test_shipped_rbf_pfn_near_exact_posterior(rbf_result):
    # The acceptance run measured a gap far below 0.1 nats with a standard error near
    # 0.004, so 0.1 fails only on a real regression of the checkpoint or of its code.
    gap, _ = rbf_result.gap("pfn")
    assert gap < 0.1


@pytest.mark.slow
def test_shipped_rbf_pfn_above_bar_floor(rbf_result):
    # The exact posterior projected onto the buckets is the best predictive of this form,
    # so a PFN below it by more than noise would mean a broken evaluation.
    gap, stderr = rbf_result.gap("pfn", "bar-floor")
    assert gap > -4 * stderr


@pytest.mark.parametrize(("name", "latent"), [("gp-hyper", False), ("gp-hyper-bo", True)])
def test_shipped_checkpoint_declares_target(name, latent):
    assert load_pfn(name).predicts_latent is latent


@pytest.mark.slow
def test_bo_pfn_mean_interpolates_exact_data():
    # A noise-free smooth function on 30 points: the predicted function passes near every
    # observation. The shipped checkpoint was measured at 0.05 standard deviations of y.
    from probnn.pfn import PFNModel

    rng = np.random.default_rng(0)
    X = rng.uniform(size=(30, 2))
    y = np.sin(5 * X[:, 0]) + np.cos(3 * X[:, 1])
    mean = np.asarray(PFNModel("gp-hyper-bo").fit(X, y).predict(X).mean)
    assert np.max(np.abs(mean - y)) < 0.1 * np.std(y)


@pytest.mark.slow
def test_bo_pfn_gap_to_oracle_bounded():
    # Scored on the noise-free function: the acceptance run measured +0.96 with a standard
    # error near 0.03 over 1,000 datasets, so 1.2 over 200 fails only on a real regression.
    result = evaluate_pfn(load_pfn("gp-hyper-bo"), make_task_prior("gp-hyper-bo"), num_datasets=200, seed=7)
    gap, _ = result.gap("pfn")
    assert gap < 1.2


# Compiles the acquisition search through the transformer: about 20 s on two cores.
@pytest.mark.slow
def test_pfn_bo_loop_proposes_inside_bounds():
    problem = get_problem("branin")
    loop = BayesianOptimization(problem.bounds, surrogate="pfn", num_initial=5, seed=0)
    for _ in range(7):
        x = loop.ask()
        loop.tell(x, float(problem(x)))
    assert np.all((loop.X >= problem.bounds[:, 0]) & (loop.X <= problem.bounds[:, 1]))


def test_pfn_bo_command_rejects_too_many_iterations(tmp_path, capsys):
    code = main(["bo", "--problem", "branin", "--surrogate", "pfn", "--iterations", "60", "--out", str(tmp_path)])
    assert code == 2
    assert "at most 60 evaluations" in capsys.readouterr().err


def test_pfn_surrogate_rejects_too_many_features():
    with pytest.raises(ValueError, match="at most 6 inputs"):
        BayesianOptimization(get_problem("ackley10").bounds, surrogate="pfn")


def test_pfn_regressor_fits_smooth_function():
    rng = np.random.default_rng(0)
    X = rng.uniform(-3.0, 3.0, size=(40, 2))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1]
    X_test = rng.uniform(-3.0, 3.0, size=(200, 2))
    mean, std = PFNRegressor().fit(X, y).predict(X_test, return_std=True)
    rmse = np.sqrt(np.mean((mean - (np.sin(X_test[:, 0]) + 0.5 * X_test[:, 1])) ** 2))
    assert rmse < 0.3 * np.std(y)


def test_pfn_regressor_rejects_too_many_rows():
    X = np.random.default_rng(0).uniform(size=(61, 2))
    with pytest.raises(ValueError, match="subsample=True"):
        PFNRegressor().fit(X, X[:, 0])


def test_pfn_regressor_subsamples_on_request():
    X = np.random.default_rng(0).uniform(size=(100, 2))
    regressor = PFNRegressor(subsample=True).fit(X, X[:, 0])
    assert regressor.posterior_.X_train.shape == (60, 2)


def test_pfn_regressor_rejects_too_many_features():
    X = np.random.default_rng(0).uniform(size=(20, 8))
    with pytest.raises(ValueError, match="reduce_features=True"):
        PFNRegressor().fit(X, X[:, 0])


def test_pfn_regressor_reduces_features_on_request():
    X = np.random.default_rng(0).uniform(size=(20, 8))
    regressor = PFNRegressor(reduce_features=True).fit(X, X[:, 0])
    assert regressor.predict(X[:3]).shape == (3,)
