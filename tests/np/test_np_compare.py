"""compare_np and the prediction plots, on the session's tiny trained networks."""

import numpy as np
import pytest

from probnn.np import compare_np, comparison_table, evaluate_np, plot_np_predictions

# The tiny networks are trained once per session, with the slow tests.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def comparison(trained):
    networks = {"CNP": trained["cnp"], "CANP": trained["canp"], "MPNP": trained["mpnp"]}
    return compare_np(networks, ["rbf", "periodic"], num_tasks=150, seed=5, reference="CANP", progress=False)


def test_scores_match_evaluate_np(trained, comparison):
    alone = evaluate_np(trained["mpnp"], "periodic", num_tasks=150, seed=5)
    assert comparison["scores"]["periodic"]["MPNP"]["target_ll"] == pytest.approx(alone["target_ll"], rel=1e-9)


def test_paired_difference_is_difference_of_means(comparison):
    # Every task has context and targets, so the mean of the per-task differences is the
    # difference of the means.
    scores = comparison["scores"]["rbf"]
    expected = scores["MPNP"]["target_ll"] - scores["CANP"]["target_ll"]
    assert comparison["differences"]["rbf"]["MPNP"]["target_ll"] == pytest.approx(expected, abs=1e-9)


def test_paired_error_below_unpaired_error(comparison):
    # The same tasks for both networks: pairing removes the spread between tasks.
    scores, difference = comparison["scores"]["rbf"], comparison["differences"]["rbf"]["CNP"]
    unpaired = np.hypot(scores["CNP"]["target_ll_se"], scores["CANP"]["target_ll_se"])
    assert difference["target_ll_se"] < unpaired


def test_reference_has_no_difference_row(comparison):
    assert "CANP" not in comparison["differences"]["rbf"]


def test_table_has_row_per_model_and_task(comparison):
    table = comparison_table(comparison)
    rows = [line for line in table.splitlines() if line.startswith("| rbf") or line.startswith("| periodic")]
    assert len(rows) == 6


def test_compare_rejects_unknown_reference(trained):
    with pytest.raises(ValueError, match="reference 'GP' is not one of the labels"):
        compare_np({"CNP": trained["cnp"]}, ["rbf"], num_tasks=10, reference="GP", progress=False)


def test_compare_rejects_unknown_task(trained):
    with pytest.raises(ValueError, match="tasks must be names from"):
        compare_np({"CNP": trained["cnp"]}, ["sine"], num_tasks=10, progress=False)


def test_plot_writes_png(trained, tmp_path):
    path = tmp_path / "predictions.png"
    plot_np_predictions({"CNP": trained["cnp"], "MPNP": trained["mpnp"]}, path, task="matern", context_sizes=(3, 12))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_rejects_simulator_task(trained, tmp_path):
    with pytest.raises(ValueError, match="draws GP tasks"):
        plot_np_predictions({"CNP": trained["cnp"]}, tmp_path / "p.png", task="lotka-volterra")
