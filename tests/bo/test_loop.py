"""Tests of the ask/tell loop: journal, resume after a kill, bounds, repeats, recompilation."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import jax
import jax.monitoring
import numpy as np
import pytest

from probnn.bo import BayesianOptimization, get_problem
from probnn.bo.journal import Journal


def _run(loop, objective, total):
    while loop.num_evaluations < total:
        x = loop.ask()
        loop.tell(x, objective(x))


def test_loop_journals_every_tell(tmp_path):
    path = tmp_path / "journal.jsonl"
    loop = BayesianOptimization([[0.0, 1.0], [-2.0, 2.0]], surrogate="gp-rbf", num_initial=4, seed=3, journal=path)
    objective = lambda x: float((x[0] - 0.3) ** 2 + (x[1] - 0.5) ** 2)
    _run(loop, objective, 6)

    lines = path.read_text().splitlines()
    assert len(lines) == 7
    header = json.loads(lines[0])
    assert header["kind"] == "header"
    assert header["surrogate"] == "gp-rbf"
    told = [json.loads(line) for line in lines[1:]]
    assert [record["index"] for record in told] == list(range(6))
    np.testing.assert_allclose([record["y"] for record in told], [objective(np.array(r["x"])) for r in told])


def test_initial_design_is_sobol_and_inside_bounds():
    bounds = np.array([[-5.0, 10.0], [0.0, 15.0]])
    loop = BayesianOptimization(bounds, num_initial=8, seed=1)
    points = []
    for _ in range(8):
        x = loop.ask()
        points.append(x)
        loop.tell(x, 0.0)
    points = np.array(points)
    assert np.all(points >= bounds[:, 0])
    assert np.all(points <= bounds[:, 1])
    # Eight scrambled Sobol points put exactly two in each quarter of every axis.
    quarters = np.floor((points - bounds[:, 0]) / (bounds[:, 1] - bounds[:, 0]) * 4).astype(int)
    for axis in range(2):
        assert np.bincount(quarters[:, axis], minlength=4).tolist() == [2, 2, 2, 2]


def test_resume_keeps_evaluations_and_continues(tmp_path):
    path = tmp_path / "journal.jsonl"
    objective = lambda x: float(np.sum((x - 0.25) ** 2))
    loop = BayesianOptimization([[0.0, 1.0]] * 2, surrogate="gp-rbf", num_initial=3, seed=0, journal=path)
    _run(loop, objective, 5)
    X_before, y_before = loop.X, loop.y

    resumed = BayesianOptimization.resume(path)
    np.testing.assert_array_equal(resumed.X, X_before)
    np.testing.assert_array_equal(resumed.y, y_before)
    assert resumed.surrogate == "gp-rbf"
    _run(resumed, objective, 7)
    assert len(Journal.open(path).evaluations) == 7


def test_journal_exists_error(tmp_path):
    path = tmp_path / "journal.jsonl"
    BayesianOptimization([[0.0, 1.0]], journal=path)
    with pytest.raises(ValueError, match="resume"):
        BayesianOptimization([[0.0, 1.0]], journal=path)


def test_truncated_last_line_moved_aside(tmp_path):
    path = tmp_path / "journal.jsonl"
    loop = BayesianOptimization([[0.0, 1.0]], num_initial=2, journal=path)
    loop.tell(np.array([0.5]), 1.0)
    with open(path, "a") as handle:
        handle.write('{"kind": "evaluation", "index": 1, "x": [0.2')
    with pytest.warns(RuntimeWarning, match="cut off"):
        resumed = BayesianOptimization.resume(path)
    assert resumed.num_evaluations == 1
    assert path.read_text().endswith("\n")
    assert (tmp_path / "journal.jsonl.partial").read_text().startswith('{"kind": "evaluation", "index": 1')
    resumed.tell(np.array([0.1]), 2.0)
    assert len(Journal.open(path).evaluations) == 2


_KILLED_RUN = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from probnn.bo import BayesianOptimization
    loop = BayesianOptimization([[0.0, 1.0]], surrogate="random", num_initial=2, seed=0, journal=sys.argv[1])
    while True:
        x = loop.ask()
        time.sleep(0.05)
        loop.tell(x, float(np.sin(7 * x[0])))
        print(loop.num_evaluations, flush=True)
    """
)


def test_killed_run_loses_no_told_evaluation(tmp_path):
    path = tmp_path / "journal.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(path)], stdout=subprocess.PIPE, text=True
    )
    acknowledged = 0
    deadline = time.monotonic() + 120
    while acknowledged < 8 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            acknowledged = int(line)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert acknowledged >= 8

    resumed = BayesianOptimization.resume(path)
    assert resumed.num_evaluations >= acknowledged
    np.testing.assert_allclose(resumed.y, np.sin(7 * resumed.X[:, 0]))


def test_tell_rejects_outside_bounds():
    loop = BayesianOptimization([[0.0, 1.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match=r"outside the bounds in dimensions \[1\]"):
        loop.tell(np.array([0.5, 2.5]), 1.0)
    with pytest.raises(ValueError, match="shape"):
        loop.tell(np.array([0.5]), 1.0)
    assert loop.num_evaluations == 0


def test_failed_evaluation_journalled_not_modelled(tmp_path):
    path = tmp_path / "journal.jsonl"
    loop = BayesianOptimization([[0.0, 1.0]], num_initial=2, journal=path)
    with pytest.warns(RuntimeWarning, match="failed"):
        loop.tell(np.array([0.5]), float("nan"))
    assert loop.num_evaluations == 1
    assert loop.y.size == 0
    assert Journal.open(path).evaluations[0]["y"] is None


def test_invalid_settings_rejected():
    with pytest.raises(ValueError, match="bounds"):
        BayesianOptimization([[1.0, 0.0]])
    with pytest.raises(ValueError, match="surrogate"):
        BayesianOptimization([[0.0, 1.0]], surrogate="forest")
    with pytest.raises(ValueError, match="acquisition"):
        BayesianOptimization([[0.0, 1.0]], acquisition="ei2")
    with pytest.raises(ValueError, match="num_initial"):
        BayesianOptimization([[0.0, 1.0]], num_initial=0)


@pytest.mark.slow
def test_ucb_optimum_at_bound_keeps_working():
    """UCB on f(x) = x over [0, 1] keeps proposing x = 0; repeats must be replaced, not crash."""
    loop = BayesianOptimization([[0.0, 1.0]], surrogate="gp-rbf", acquisition="ucb", beta=0.0, num_initial=3, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _run(loop, lambda x: float(x[0]), 12)
    assert loop.num_evaluations == 12
    assert loop.best_value < 0.05
    X = loop.X[:, 0]
    assert np.min(np.abs(X[:, None] - X[None, :]) + np.eye(X.size)) > 0.0
    assert any("repeats an evaluated input" in message for message in loop.messages)


@pytest.mark.slow
def test_no_recompilation_within_bucket():
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    problem = get_problem("branin")
    loop = BayesianOptimization(problem.bounds, surrogate="gp-matern", num_initial=3, seed=0)
    # Points 3..15 share the smallest padding bucket (16).
    _run(loop, problem, 6)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        _run(loop, problem, 9)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []


@pytest.mark.slow
@pytest.mark.parametrize("acquisition", ["logei", "pi", "ucb", "ts"])
def test_each_acquisition_improves_branin(acquisition):
    problem = get_problem("branin")
    loop = BayesianOptimization(problem.bounds, surrogate="gp-matern", acquisition=acquisition, num_initial=6, seed=2)
    _run(loop, problem, 6)
    initial_best = loop.best_value
    _run(loop, problem, 20)
    assert loop.best_value < initial_best
    assert loop.best_value - problem.optimum < 3.0
