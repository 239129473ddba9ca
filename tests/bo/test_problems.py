"""Tests of the Bayesian-optimization benchmark problems in probnn.bo.problems."""

import dataclasses
import re

import numpy as np
import pytest

from probnn.bo.problems import (
    BOUNDS_TOLERANCE,
    Problem,
    get_problem,
    list_problems,
)

# Synthetic problems with known optima, over several dimensions per family.
SYNTHETIC_NAMES = [
    "branin",
    "hartmann3",
    "hartmann6",
    "ackley1",
    "ackley2",
    "ackley5",
    "ackley10",
    "levy1",
    "levy2",
    "levy5",
    "levy10",
    "rosenbrock2",
    "rosenbrock3",
    "rosenbrock10",
    "styblinski_tang1",
    "styblinski_tang2",
    "styblinski_tang5",
    "styblinski_tang10",
    "michalewicz2",
    "michalewicz5",
    "michalewicz10",
    "forrester",
]

SKLEARN_NAMES = ["svr-diabetes", "svc-digits", "gbr-diabetes"]


def optimum_tolerance(problem: Problem) -> float:
    # Hartmann optima are compared relative to their magnitude, the others absolutely.
    if problem.name.startswith("hartmann"):
        return 1e-4 * abs(problem.optimum)
    return 1e-4


def center(problem: Problem) -> np.ndarray:
    return problem.bounds.mean(axis=1)


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_value_at_optimizers_is_optimum(name):
    problem = get_problem(name)

    assert problem.optimum is not None
    assert problem.optimizers is not None
    assert problem.optimizers.shape[1] == problem.dim
    for optimizer in problem.optimizers:
        assert abs(problem(optimizer) - problem.optimum) <= optimum_tolerance(problem)


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_optimizers_are_local_minima(name):
    # A wrong minimizer would usually have a lower value close by.
    problem = get_problem(name)
    rng = np.random.default_rng(0)
    lower, upper = problem.bounds[:, 0], problem.bounds[:, 1]

    for optimizer in problem.optimizers:
        value = problem(optimizer)
        steps = rng.normal(scale=1e-3, size=(200, problem.dim))
        neighbors = np.clip(optimizer + steps, lower, upper)
        neighbor_values = np.array([problem(neighbor) for neighbor in neighbors])
        assert neighbor_values.min() >= value - 1e-12


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_random_points_not_below_optimum(name):
    problem = get_problem(name)
    rng = np.random.default_rng(1)
    lower, upper = problem.bounds[:, 0], problem.bounds[:, 1]
    points = lower + rng.uniform(size=(1000, problem.dim)) * (upper - lower)

    values = np.array([problem(point) for point in points])

    assert np.all(np.isfinite(values))
    assert values.min() >= problem.optimum - 1e-12


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_objective_accepts_batches(name):
    problem = get_problem(name)
    rng = np.random.default_rng(2)
    lower, upper = problem.bounds[:, 0], problem.bounds[:, 1]
    points = lower + rng.uniform(size=(7, problem.dim)) * (upper - lower)

    batch_values = problem.objective(points)

    assert batch_values.shape == (7,)
    np.testing.assert_allclose(batch_values, [problem(point) for point in points], rtol=1e-12)


@pytest.mark.parametrize(
    ("name", "point", "expected"),
    [
        # Values computed by hand from the formulas.
        # The mean of cos(2 pi x_i) is 1, so the cosine term cancels e.
        ("ackley2", [1.0, 0.0], 20.0 - 20.0 * np.exp(-0.2 * np.sqrt(0.5))),
        ("rosenbrock2", [0.0, 0.0], 1.0),
        ("rosenbrock3", [0.0, 1.0, 1.0], 100.0 + 1.0),
        ("styblinski_tang1", [0.0], 0.0),
        ("styblinski_tang2", [1.0, 2.0], 0.5 * ((1 - 16 + 5) + (16 - 64 + 10))),
        ("levy1", [1.0], 0.0),
        # w = (0.5, 1): sin^2(pi / 2) + 0.25 (1 + 10 sin^2(pi / 2 + 1)) + 0.
        ("levy2", [-1.0, 1.0], 1.0 + 0.25 * (1.0 + 10.0 * np.cos(1.0) ** 2)),
        ("branin", [0.0, 0.0], 36.0 + 10.0 * (1.0 - 1.0 / (8.0 * np.pi)) + 10.0),
        ("michalewicz2", [np.pi / 2, np.pi / 2], -(np.sin(np.pi / 4) ** 20 + 1.0)),
        # (6 * 0.5 - 2)^2 sin(12 * 0.5 - 4) = sin 2.
        ("forrester", [0.5], np.sin(2.0)),
    ],
)
def test_values_at_hand_computed_points(name, point, expected):
    assert get_problem(name)(point) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_styblinski_tang_optimum_scales_with_dimension():
    for dim in (1, 3, 7):
        optimum = get_problem(f"styblinski_tang{dim}").optimum
        assert optimum == pytest.approx(-39.16616570377142 * dim)


def test_michalewicz_optimum_unknown_for_unlisted_dimension():
    problem = get_problem("michalewicz3")

    assert problem.dim == 3
    assert problem.optimum is None
    assert problem.optimizers is None


def test_literature_optima():
    assert get_problem("branin").optimum == pytest.approx(0.397887, abs=1e-6)
    assert get_problem("hartmann3").optimum == pytest.approx(-3.86278, abs=1e-5)
    assert get_problem("hartmann6").optimum == pytest.approx(-3.32237, abs=1e-5)
    assert get_problem("michalewicz2").optimum == pytest.approx(-1.8013034100985537, abs=1e-12)
    assert get_problem("michalewicz5").optimum == pytest.approx(-4.687658, abs=1e-6)
    assert get_problem("michalewicz10").optimum == pytest.approx(-9.66015, abs=1e-5)
    assert get_problem("branin").optimizers.shape == (3, 2)
    assert get_problem("forrester").optimum == pytest.approx(-6.02074, abs=1e-5)


@pytest.mark.parametrize(
    ("name", "bounds"),
    [
        ("branin", [[-5.0, 10.0], [0.0, 15.0]]),
        ("hartmann6", [[0.0, 1.0]] * 6),
        ("ackley3", [[-32.768, 32.768]] * 3),
        ("levy2", [[-10.0, 10.0]] * 2),
        ("rosenbrock4", [[-5.0, 10.0]] * 4),
        ("styblinski_tang2", [[-5.0, 5.0]] * 2),
        ("michalewicz2", [[0.0, np.pi]] * 2),
    ],
)
def test_standard_domains(name, bounds):
    np.testing.assert_array_equal(get_problem(name).bounds, bounds)


@pytest.mark.parametrize("name", list_problems())
def test_registry_problem_fields(name):
    problem = get_problem(name)

    assert problem.name == name
    assert problem.bounds.shape == (problem.dim, 2)
    assert problem.bounds.dtype == np.float64
    assert np.all(problem.bounds[:, 0] < problem.bounds[:, 1])
    assert len(problem.parameter_names) == problem.dim
    assert len(set(problem.parameter_names)) == problem.dim
    assert problem.description
    assert "\n" not in problem.description


def test_list_problems_names():
    assert list_problems() == [
        "branin",
        "hartmann3",
        "hartmann6",
        "ackley2",
        "levy2",
        "rosenbrock2",
        "styblinski_tang2",
        "michalewicz2",
        "forrester",
        "svr-diabetes",
        "svc-digits",
        "gbr-diabetes",
    ]


@pytest.mark.parametrize(
    ("name", "expected_name", "expected_dim"),
    [
        ("BRANIN", "branin", 2),
        ("Hartmann6", "hartmann6", 6),
        ("ackley", "ackley2", 2),
        ("ACKLEY10", "ackley10", 10),
        ("levy", "levy2", 2),
        ("Levy7", "levy7", 7),
        ("rosenbrock", "rosenbrock2", 2),
        ("styblinski_tang", "styblinski_tang2", 2),
        ("styblinski-tang5", "styblinski_tang5", 5),
        ("Styblinski_Tang5", "styblinski_tang5", 5),
        ("michalewicz", "michalewicz2", 2),
        ("Michalewicz10", "michalewicz10", 10),
        ("SVR_Diabetes", "svr-diabetes", 3),
    ],
)
def test_get_problem_name_variants(name, expected_name, expected_dim):
    problem = get_problem(name)

    assert problem.name == expected_name
    assert problem.dim == expected_dim


@pytest.mark.parametrize("name", ["not-a-problem", "hartmann4", "branin3", "svr-diabetes2", ""])
def test_get_problem_unknown_name(name):
    with pytest.raises(ValueError, match=re.escape(repr(name))) as error:
        get_problem(name)

    assert "branin" in str(error.value)
    assert "ackley10" in str(error.value)


@pytest.mark.parametrize("name", ["rosenbrock1", "ackley0", "levy0"])
def test_get_problem_dimension_too_small(name):
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        get_problem(name)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "0", True])
def test_get_problem_invalid_seed(seed):
    with pytest.raises(ValueError, match=re.escape(repr(seed))):
        get_problem("branin", seed=seed)


def test_call_rejects_point_outside_bounds():
    problem = get_problem("branin")

    with pytest.raises(ValueError, match=r"x\[0\] \(x1\) = 11\.0 is not in \[-5\.0, 10\.0\]"):
        problem([11.0, 5.0])
    with pytest.raises(ValueError, match=r"x\[1\] \(x2\) = -0\.5 is not in \[0\.0, 15\.0\]"):
        problem([0.0, -0.5])
    with pytest.raises(ValueError, match="np.clip"):
        problem([11.0, 5.0])


def test_call_clips_point_within_tolerance():
    problem = get_problem("branin")
    upper = problem.bounds[:, 1]

    slightly_outside = upper + 0.5 * BOUNDS_TOLERANCE

    assert problem(slightly_outside) == problem(upper)
    with pytest.raises(ValueError, match="not in"):
        problem(upper + 10 * BOUNDS_TOLERANCE)


@pytest.mark.parametrize("point", [[1.0, 2.0, 3.0], [1.0], [[1.0, 2.0], [3.0, 4.0]], 1.0])
def test_call_rejects_wrong_shape(point):
    problem = get_problem("branin")
    shape = np.shape(point)

    with pytest.raises(ValueError, match=re.escape(f"x has shape {shape}")):
        problem(point)


def test_call_accepts_row_vector():
    problem = get_problem("branin")
    point = np.array([np.pi, 2.275])

    assert problem(point[None, :]) == problem(point)
    assert problem(list(point)) == problem(point)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_call_rejects_non_finite(bad_value):
    problem = get_problem("hartmann3")

    with pytest.raises(ValueError, match=re.escape(str(bad_value))):
        problem([0.5, bad_value, 0.5])


def test_call_rejects_non_numeric():
    with pytest.raises(ValueError, match="'a'"):
        get_problem("branin")(["a", 1.0])


def test_call_returns_python_float():
    assert type(get_problem("hartmann6")(np.full(6, 0.5))) is float


def test_problem_is_immutable():
    problem = get_problem("branin")

    with pytest.raises(dataclasses.FrozenInstanceError):
        problem.name = "other"
    with pytest.raises(ValueError, match="read-only"):
        problem.bounds[0, 0] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        problem.optimizers[0, 0] = 0.0


def test_problem_rejects_invalid_fields():
    fields = dict(
        name="toy",
        bounds=np.array([[0.0, 1.0], [0.0, 1.0]]),
        objective=lambda x: float(np.sum(x)),
        optimum=0.0,
        optimizers=np.zeros((1, 2)),
        parameter_names=("a", "b"),
        description="toy problem",
    )
    assert Problem(**fields).dim == 2

    with pytest.raises(ValueError, match="shape"):
        Problem(**{**fields, "bounds": np.array([0.0, 1.0])})
    with pytest.raises(ValueError, match="lower < upper"):
        Problem(**{**fields, "bounds": np.array([[1.0, 0.0], [0.0, 1.0]])})
    with pytest.raises(ValueError, match="parameter names"):
        Problem(**{**fields, "parameter_names": ("a",)})
    with pytest.raises(ValueError, match="optimizers"):
        Problem(**{**fields, "optimizers": np.zeros((1, 3))})


# The scikit-learn problems take up to about 0.6 s per evaluation, so these
# tests use few evaluations.


@pytest.mark.parametrize("name", SKLEARN_NAMES)
def test_sklearn_problem_deterministic(name):
    point = center(get_problem(name))

    first = get_problem(name, seed=3)(point)
    second = get_problem(name, seed=3)(point)

    assert np.isfinite(first)
    assert first > 0.0
    assert first == second


@pytest.mark.parametrize("name", SKLEARN_NAMES)
def test_sklearn_problem_seed_changes_folds(name):
    point = center(get_problem(name))

    assert get_problem(name, seed=0)(point) != get_problem(name, seed=1)(point)


@pytest.mark.parametrize("name", SKLEARN_NAMES)
def test_sklearn_problem_fields(name):
    problem = get_problem(name)

    assert problem.optimum is None
    assert problem.optimizers is None


def test_sklearn_parameter_names():
    assert get_problem("svr-diabetes").parameter_names == (
        "log10_C",
        "log10_gamma",
        "log10_epsilon",
    )
    assert get_problem("svc-digits").parameter_names == ("log10_C", "log10_gamma")
    assert get_problem("gbr-diabetes").parameter_names == (
        "log10_learning_rate",
        "max_depth",
        "n_estimators",
    )


def test_gbr_rounds_integer_parameters():
    problem = get_problem("gbr-diabetes")

    assert problem([-1.0, 1.6, 19.6]) == problem([-1.0, 2.4, 20.4])
    assert problem([-1.0, 1.6, 19.6]) != problem([-1.0, 2.6, 19.6])


def test_svr_reasonable_fit():
    # The mean predictor has RMSE 1 on the standardized target, and a tuned
    # SVR on diabetes explains about half of the variance.
    value = get_problem("svr-diabetes")([0.0, -2.0, -1.0])

    assert 0.6 < value < 0.9
