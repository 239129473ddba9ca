r"""Benchmark problems for Bayesian optimization, all posed as minimization.

Two kinds of problem are registered:

* Synthetic test functions with standard domains and, where the literature
  gives one, the known global minimum: ``branin``, ``hartmann3``,
  ``hartmann6`` and the families ``ackley``, ``levy``, ``rosenbrock``,
  ``styblinski_tang`` and ``michalewicz``, whose dimension is a name suffix
  (``ackley10``). Formulas, domains and optima follow the Virtual Library of
  Simulation Experiments, S. Surjanovic and D. Bingham,
  https://www.sfu.ca/~ssurjano/optimization.html.
* Hyperparameter tuning of scikit-learn models by 5-fold cross-validation on
  the datasets bundled with scikit-learn, so no download is needed:
  ``svr-diabetes``, ``svc-digits`` and ``gbr-diabetes``. Their optimum is
  unknown.

Each problem is a :class:`Problem`: a black-box objective that takes one point
as a 1-d NumPy array and returns a float, plus its box bounds. Use
:func:`get_problem` to build one by name and :func:`list_problems` for the
names.

Examples
--------
>>> from probnn.bo.problems import get_problem
>>> problem = get_problem("branin")
>>> round(problem([3.141592653589793, 2.275]), 6)
0.397887
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import warnings
from collections.abc import Callable

import numpy as np

__all__ = [
    "BOUNDS_TOLERANCE",
    "Problem",
    "ackley",
    "branin",
    "forrester",
    "get_problem",
    "hartmann3",
    "hartmann6",
    "levy",
    "list_problems",
    "michalewicz",
    "rosenbrock",
    "styblinski_tang",
]

#: Absolute distance by which a point may lie outside the bounds and still be
#: accepted by :meth:`Problem.__call__`. Such a point is clipped to the bounds
#: before evaluation, which absorbs rounding in a rescaling from the unit cube.
BOUNDS_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """Minimization problem over a box, made of a black-box objective and its bounds.

    Calling the problem validates the point and then evaluates the objective.
    Equality is identity (``eq=False``) because NumPy array fields have no
    single truth value under ``==``. The arrays are stored as read-only copies.

    Attributes
    ----------
    name : str
        Registry name, for example ``"hartmann6"`` or ``"ackley10"``.
    bounds : numpy.ndarray
        Box bounds of shape ``(d, 2)``, float64, with the lower bound in
        column 0 and the upper bound in column 1.
    objective : callable
        Function that takes a point of shape ``(d,)`` and returns a float.
        It does no input validation, so call the problem itself for that.
        The synthetic objectives also accept a batch of shape ``(n, d)``.
    optimum : float or None
        Known global minimum value, ``None`` when unknown.
    optimizers : numpy.ndarray or None
        Known global minimizers, shape ``(k, d)``, ``None`` when unknown.
    parameter_names : tuple of str
        One name per dimension, for example ``("log10_C", "log10_gamma")``.
    description : str
        One-line summary, shown by ``probnn problems``.
    """

    name: str
    bounds: np.ndarray
    objective: Callable[[np.ndarray], float]
    optimum: float | None
    optimizers: np.ndarray | None
    parameter_names: tuple[str, ...]
    description: str

    def __post_init__(self) -> None:
        bounds = np.array(self.bounds, dtype=np.float64)
        if bounds.ndim != 2 or bounds.shape[1] != 2 or bounds.shape[0] == 0:
            raise ValueError(
                f"Problem {self.name!r}: bounds has shape {bounds.shape}, but it must have "
                "shape (d, 2) with d >= 1, lower bounds in column 0 and upper bounds in column 1."
            )
        if not np.all(np.isfinite(bounds)) or np.any(bounds[:, 0] >= bounds[:, 1]):
            raise ValueError(
                f"Problem {self.name!r}: bounds {bounds.tolist()} are invalid. Each row must be "
                "[lower, upper] with finite lower < upper."
            )
        bounds.setflags(write=False)
        object.__setattr__(self, "bounds", bounds)

        dim = bounds.shape[0]
        parameter_names = tuple(self.parameter_names)
        if len(parameter_names) != dim:
            raise ValueError(
                f"Problem {self.name!r}: got {len(parameter_names)} parameter names "
                f"{parameter_names}, but bounds has {dim} rows. Give one name per dimension."
            )
        object.__setattr__(self, "parameter_names", parameter_names)

        if self.optimizers is not None:
            optimizers = np.array(self.optimizers, dtype=np.float64)
            if optimizers.ndim != 2 or optimizers.shape[1] != dim:
                raise ValueError(
                    f"Problem {self.name!r}: optimizers has shape {optimizers.shape}, but it "
                    f"must have shape (k, {dim}), one known minimizer per row."
                )
            optimizers.setflags(write=False)
            object.__setattr__(self, "optimizers", optimizers)
        if self.optimum is not None:
            object.__setattr__(self, "optimum", float(self.optimum))

    @property
    def dim(self) -> int:
        """Number of input dimensions ``d``."""
        return self.bounds.shape[0]

    def __call__(self, x) -> float:
        """Validate the point ``x`` and return the objective value there.

        Parameters
        ----------
        x : array_like
            One point, of shape ``(d,)`` or ``(1, d)``.

        Returns
        -------
        float
            ``float(objective(x))``.

        Raises
        ------
        ValueError
            If ``x`` is not numeric, has another shape, contains NaN or
            infinity, or lies outside the bounds by more than
            :data:`BOUNDS_TOLERANCE`. Points outside by less are clipped to
            the bounds.
        """
        point = self._validate_point(x)
        return float(self.objective(point))

    def _validate_point(self, x) -> np.ndarray:
        try:
            point = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"x = {reprlib.repr(x)} is not a numeric array. Problem {self.name!r} "
                f"expects one point as {self.dim} floats {self.parameter_names}."
            ) from error

        if point.shape == (1, self.dim):
            point = point[0]
        if point.shape != (self.dim,):
            raise ValueError(
                f"x has shape {point.shape}, but problem {self.name!r} expects shape "
                f"({self.dim},) or (1, {self.dim}). Pass one point with one value per "
                f"parameter {self.parameter_names}."
            )

        if not np.all(np.isfinite(point)):
            raise ValueError(
                f"x = {point.tolist()} contains NaN or infinity, but problem {self.name!r} "
                f"accepts only finite points inside its bounds {self.bounds.tolist()}."
            )

        lower = self.bounds[:, 0]
        upper = self.bounds[:, 1]
        outside = (point < lower - BOUNDS_TOLERANCE) | (point > upper + BOUNDS_TOLERANCE)
        if np.any(outside):
            details = ", ".join(
                f"x[{i}] ({self.parameter_names[i]}) = {float(point[i])!r} is not in "
                f"[{float(lower[i])!r}, {float(upper[i])!r}]"
                for i in np.flatnonzero(outside)
            )
            raise ValueError(
                f"x is outside the bounds of problem {self.name!r}: {details}. "
                "Clip x to problem.bounds, e.g. np.clip(x, bounds[:, 0], bounds[:, 1]), "
                "or map it from the unit cube as lower + u * (upper - lower)."
            )
        return np.clip(point, lower, upper)


# Synthetic test functions. Each takes points of shape (..., d) and returns
# values of shape (...), so a batch of points is evaluated in one call.


def _as_points(x, name: str, dim: int | None = None) -> np.ndarray:
    points = np.asarray(x, dtype=np.float64)
    if points.ndim == 0 or points.shape[-1] == 0:
        raise ValueError(
            f"{name}: x has shape {points.shape}, but it must have shape (..., d) with d >= 1."
        )
    if dim is not None and points.shape[-1] != dim:
        raise ValueError(
            f"{name}: x has shape {points.shape}, but the function is defined for "
            f"d = {dim}, so the last axis must have length {dim}."
        )
    return points


def forrester(x) -> np.ndarray:
    r"""Evaluate the Forrester function, a 1-d test function with one local minimum besides the global one.

    .. math::

        f(x) = (6x - 2)^2 \sin(12x - 4),

    on :math:`x \in [0, 1]`. The global minimum is :math:`-6.020740` at
    :math:`x \approx 0.757249`; a local minimum of about :math:`-0.986` lies near
    :math:`x = 0.143`.

    Parameters
    ----------
    x : array_like, shape (..., 1)

    Returns
    -------
    numpy.ndarray, shape (...)

    References
    ----------
    Forrester, Sobester and Keane, "Engineering Design via Surrogate Modelling", Wiley, 2008.
    """
    points = _as_points(x, "forrester", dim=1)[..., 0]
    return (6.0 * points - 2.0) ** 2 * np.sin(12.0 * points - 4.0)


def branin(x) -> np.ndarray:
    r"""Evaluate the Branin (Branin-Hoo) function.

    .. math::

        f(x) = a (x_2 - b x_1^2 + c x_1 - r)^2 + s (1 - t) \cos x_1 + s,

    with :math:`a = 1`, :math:`b = 5.1 / (4 \pi^2)`, :math:`c = 5 / \pi`,
    :math:`r = 6`, :math:`s = 10` and :math:`t = 1 / (8 \pi)`, on
    :math:`x_1 \in [-5, 10]`, :math:`x_2 \in [0, 15]`. The three global minima
    are at :math:`(-\pi, 12.275)`, :math:`(\pi, 2.275)` and
    :math:`(3\pi, 2.475)`, with value :math:`s t = 5 / (4 \pi) \approx 0.397887`.

    Parameters
    ----------
    x : array_like, shape (..., 2)

    Returns
    -------
    numpy.ndarray, shape (...)

    References
    ----------
    Surjanovic and Bingham, https://www.sfu.ca/~ssurjano/branin.html
    """
    points = _as_points(x, "branin", dim=2)
    x1 = points[..., 0]
    x2 = points[..., 1]
    b = 5.1 / (4.0 * np.pi**2)
    c = 5.0 / np.pi
    t = 1.0 / (8.0 * np.pi)
    return (x2 - b * x1**2 + c * x1 - 6.0) ** 2 + 10.0 * (1.0 - t) * np.cos(x1) + 10.0


# Coefficients of the Hartmann functions (Surjanovic and Bingham,
# https://www.sfu.ca/~ssurjano/hart3.html and hart6.html).
_HARTMANN_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_HARTMANN3_A = np.array(
    [
        [3.0, 10.0, 30.0],
        [0.1, 10.0, 35.0],
        [3.0, 10.0, 30.0],
        [0.1, 10.0, 35.0],
    ]
)
_HARTMANN3_P = 1e-4 * np.array(
    [
        [3689.0, 1170.0, 2673.0],
        [4699.0, 4387.0, 7470.0],
        [1091.0, 8732.0, 5547.0],
        [381.0, 5743.0, 8828.0],
    ]
)
_HARTMANN6_A = np.array(
    [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ]
)
_HARTMANN6_P = 1e-4 * np.array(
    [
        [1312.0, 1696.0, 5569.0, 124.0, 8283.0, 5886.0],
        [2329.0, 4135.0, 8307.0, 3736.0, 1004.0, 9991.0],
        [2348.0, 1451.0, 3522.0, 2883.0, 3047.0, 6650.0],
        [4047.0, 8828.0, 8732.0, 5743.0, 1091.0, 381.0],
    ]
)


def _hartmann(points: np.ndarray, a: np.ndarray, p: np.ndarray) -> np.ndarray:
    # exponents has shape (..., 4), with one term per row of A and P.
    exponents = np.sum(a * (points[..., None, :] - p) ** 2, axis=-1)
    return -np.sum(_HARTMANN_ALPHA * np.exp(-exponents), axis=-1)


def hartmann3(x) -> np.ndarray:
    r"""Evaluate the 3-d Hartmann function on :math:`[0, 1]^3`.

    .. math::

        f(x) = -\sum_{i=1}^{4} \alpha_i
               \exp\Big(-\sum_{j=1}^{3} A_{ij} (x_j - P_{ij})^2\Big),

    with :math:`\alpha = (1, 1.2, 3, 3.2)` and the matrices :math:`A`, :math:`P`
    of the reference. The global minimum is :math:`f \approx -3.86278` at
    :math:`x \approx (0.114589, 0.555649, 0.852547)`.

    Parameters
    ----------
    x : array_like, shape (..., 3)

    Returns
    -------
    numpy.ndarray, shape (...)

    References
    ----------
    Surjanovic and Bingham, https://www.sfu.ca/~ssurjano/hart3.html
    """
    return _hartmann(_as_points(x, "hartmann3", dim=3), _HARTMANN3_A, _HARTMANN3_P)


def hartmann6(x) -> np.ndarray:
    r"""Evaluate the 6-d Hartmann function on :math:`[0, 1]^6`.

    .. math::

        f(x) = -\sum_{i=1}^{4} \alpha_i
               \exp\Big(-\sum_{j=1}^{6} A_{ij} (x_j - P_{ij})^2\Big),

    with :math:`\alpha = (1, 1.2, 3, 3.2)` and the matrices :math:`A`, :math:`P`
    of the reference. The global minimum is :math:`f \approx -3.32237` at
    :math:`x \approx (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)`.

    Parameters
    ----------
    x : array_like, shape (..., 6)

    Returns
    -------
    numpy.ndarray, shape (...)

    References
    ----------
    Surjanovic and Bingham, https://www.sfu.ca/~ssurjano/hart6.html
    """
    return _hartmann(_as_points(x, "hartmann6", dim=6), _HARTMANN6_A, _HARTMANN6_P)


def ackley(x, a: float = 20.0, b: float = 0.2, c: float = 2.0 * np.pi) -> np.ndarray:
    r"""Evaluate the Ackley function in any dimension :math:`d`.

    .. math::

        f(x) = -a \exp\Big(-b \sqrt{\tfrac{1}{d} \sum_{i=1}^{d} x_i^2}\Big)
               - \exp\Big(\tfrac{1}{d} \sum_{i=1}^{d} \cos(c x_i)\Big) + a + e,

    with the standard :math:`a = 20`, :math:`b = 0.2`, :math:`c = 2 \pi`, on
    :math:`[-32.768, 32.768]^d`. The global minimum is 0 at the origin.

    Parameters
    ----------
    x : array_like, shape (..., d)
    a, b, c : float

    Returns
    -------
    numpy.ndarray, shape (...)

    References
    ----------
    Surjanovic and Bingham, https://www.sfu.ca/~ssurjano/ackley.html
    """
    points = _as_points(x, "ackley")
    root_mean_square = np.sqrt(np.mean(points**2, axis=-1))
    mean_cosine = np.mean(np.cos(c * points), axis=-1)
    return -a * np.exp(-b * root_mean_square) - np.exp(mean_cosine) + a + math.e


def levy(x) -> np.ndarray:
    r"""Evaluate the Levy function in any dimension :math:`d`.

    .. math::

        f(x) = \sin^2(\pi w_1)
               + \sum_{i=1}^{d-1} (w_i - 1)^2 \big[1 + 10 \sin^2(\pi w_i + 1)\big]
               + (w_d - 1)^2 \big[1 + \sin^2(2 \pi w_d)\big],
        \qquad w_i = 1 + \frac{x_i - 1}{4},

    on :math:`[-10, 10]^d`. The global minimum is 0 at :math:`(1, \dots, 1)`.

    Parameters
    ----------
    x : array_like, shape (..., d)

    Returns
    -------
    numpy.ndarray, shape (...)

    References
    ----------
    Surjanovic and Bingham, https://www.sfu.ca/~ssurjano/levy.html
    """
    w = 1.0 + (_as_points(x, "levy") - 1.0) / 4.0
    first = np.sin(np.pi * w[..., 0]) ** 2
    inner = w[..., :-1]
    middle = np.sum((inner - 1.0) ** 2 * (1.0 + 10.0 * np.sin(np.pi * inner + 1.0) ** 2), axis=-1)
    w_last = w[..., -1]
    last = (w_last - 1.0) ** 2 * (1.0 + np.sin(2.0 * np.pi * w_last) ** 2)
    return first + middle + last


def rosenbrock(x) -> np.ndarray:
    r"""Evaluate the Rosenbrock function in dimension :math:`d \ge 2`.

    .. math::

        f(x) = \sum_{i=1}^{d-1} \big[100 (x_{i+1} - x_i^2)^2 + (x_i - 1)^2\big],

    on :math:`[-5, 10]^d`. The global minimum is 0 at :math:`(1, \dots, 1)`.

    Parameters
    ----------
    x : array_like, shape (..., d)

    Returns
    -------
    numpy.ndarray, shape (...)

    References
    ----------
    Surjanovic and Bingham, https://www.sfu.ca/~ssurjano/rosen.html
    """
    points = _as_points(x, "rosenbrock")
    if points.shape[-1] < 2:
        raise ValueError(f"rosenbrock: x has shape {points.shape}, but it needs d >= 2.")
    head = points[..., :-1]
    tail = points[..., 1:]
    return np.sum(100.0 * (tail - head**2) ** 2 + (head - 1.0) ** 2, axis=-1)


# Root of 4 x^3 - 32 x + 5 = 0 (the derivative of each Styblinski-Tang term) in
# [-5, 5] that gives the lowest term, found with scipy.optimize.brentq.
_STYBLINSKI_TANG_MINIMIZER = -2.903534027771177
_STYBLINSKI_TANG_MINIMUM_PER_DIM = -39.16616570377142


def styblinski_tang(x) -> np.ndarray:
    r"""Evaluate the Styblinski-Tang function in any dimension :math:`d`.

    .. math::

        f(x) = \frac{1}{2} \sum_{i=1}^{d} \big(x_i^4 - 16 x_i^2 + 5 x_i\big),

    on :math:`[-5, 5]^d`. The function is separable, and the global minimum is
    :math:`-39.16616570377142 \, d` at :math:`x_i = -2.903534027771177`.

    Parameters
    ----------
    x : array_like, shape (..., d)

    Returns
    -------
    numpy.ndarray, shape (...)

    References
    ----------
    Surjanovic and Bingham, https://www.sfu.ca/~ssurjano/stybtang.html
    """
    points = _as_points(x, "styblinski_tang")
    return 0.5 * np.sum(points**4 - 16.0 * points**2 + 5.0 * points, axis=-1)


def michalewicz(x, m: float = 10.0) -> np.ndarray:
    r"""Evaluate the Michalewicz function in any dimension :math:`d`.

    .. math::

        f(x) = -\sum_{i=1}^{d} \sin(x_i) \sin^{2m}\Big(\frac{i x_i^2}{\pi}\Big),

    with steepness :math:`m = 10`, on :math:`[0, \pi]^d`. Published global
    minima are :math:`-1.8013` for :math:`d = 2`, :math:`-4.687658` for
    :math:`d = 5` and :math:`-9.66015` for :math:`d = 10`.

    Parameters
    ----------
    x : array_like, shape (..., d)
    m : float
        Steepness of the valleys. Larger values make them narrower.

    Returns
    -------
    numpy.ndarray, shape (...)

    References
    ----------
    Surjanovic and Bingham, https://www.sfu.ca/~ssurjano/michal.html
    """
    points = _as_points(x, "michalewicz")
    index = np.arange(1, points.shape[-1] + 1)
    return -np.sum(np.sin(points) * np.sin(index * points**2 / np.pi) ** (2.0 * m), axis=-1)


# Factories of the synthetic problems. Each takes the dimension (ignored by
# the fixed-dimension functions) and the seed, which no synthetic problem uses.


def _default_names(dim: int) -> tuple[str, ...]:
    return tuple(f"x{i}" for i in range(1, dim + 1))


# Refined with scipy.optimize.minimize_scalar (bounded, xatol 1e-12) on [0.7, 0.8].
_FORRESTER_MINIMIZER = 0.7572487585232999
_FORRESTER_MINIMUM = -6.0207400557670825


def _make_forrester(dim: int, seed: int) -> Problem:
    return Problem(
        name="forrester",
        bounds=np.array([[0.0, 1.0]]),
        objective=forrester,
        optimum=_FORRESTER_MINIMUM,
        optimizers=np.array([[_FORRESTER_MINIMIZER]]),
        parameter_names=_default_names(1),
        description="Forrester function (6x - 2)^2 sin(12x - 4) on [0, 1], 1-d, global minimum -6.020740",
    )


def _make_branin(dim: int, seed: int) -> Problem:
    return Problem(
        name="branin",
        bounds=np.array([[-5.0, 10.0], [0.0, 15.0]]),
        objective=branin,
        optimum=5.0 / (4.0 * np.pi),
        optimizers=np.array([[-np.pi, 12.275], [np.pi, 2.275], [3.0 * np.pi, 2.475]]),
        parameter_names=_default_names(2),
        description="Branin function on [-5, 10] x [0, 15], 2-d, three global minima of 0.397887",
    )


# The published minimizers (Surjanovic and Bingham) have 6 digits. These
# were refined with scipy.optimize.minimize (BFGS, then Nelder-Mead) from the
# published points, and the minima are the function values at the refined
# points. They agree with the published -3.86278 and -3.32237.
_HARTMANN3_MINIMIZER = [0.1145888686, 0.5556488946, 0.8525469840]
_HARTMANN3_MINIMUM = -3.862779787332663
_HARTMANN6_MINIMIZER = [
    0.2016895128,
    0.1500106912,
    0.4768739755,
    0.2753324310,
    0.3116516175,
    0.6573005330,
]
_HARTMANN6_MINIMUM = -3.322368011415515


def _make_hartmann3(dim: int, seed: int) -> Problem:
    return Problem(
        name="hartmann3",
        bounds=np.tile([0.0, 1.0], (3, 1)),
        objective=hartmann3,
        optimum=_HARTMANN3_MINIMUM,
        optimizers=np.array([_HARTMANN3_MINIMIZER]),
        parameter_names=_default_names(3),
        description="Hartmann function on [0, 1]^3, global minimum -3.86278",
    )


def _make_hartmann6(dim: int, seed: int) -> Problem:
    return Problem(
        name="hartmann6",
        bounds=np.tile([0.0, 1.0], (6, 1)),
        objective=hartmann6,
        optimum=_HARTMANN6_MINIMUM,
        optimizers=np.array([_HARTMANN6_MINIMIZER]),
        parameter_names=_default_names(6),
        description="Hartmann function on [0, 1]^6, global minimum -3.32237",
    )


def _make_ackley(dim: int, seed: int) -> Problem:
    return Problem(
        name=f"ackley{dim}",
        bounds=np.tile([-32.768, 32.768], (dim, 1)),
        objective=ackley,
        optimum=0.0,
        optimizers=np.zeros((1, dim)),
        parameter_names=_default_names(dim),
        description=f"Ackley function on [-32.768, 32.768]^{dim}, global minimum 0 at the origin",
    )


def _make_levy(dim: int, seed: int) -> Problem:
    return Problem(
        name=f"levy{dim}",
        bounds=np.tile([-10.0, 10.0], (dim, 1)),
        objective=levy,
        optimum=0.0,
        optimizers=np.ones((1, dim)),
        parameter_names=_default_names(dim),
        description=f"Levy function on [-10, 10]^{dim}, global minimum 0 at (1, ..., 1)",
    )


def _make_rosenbrock(dim: int, seed: int) -> Problem:
    return Problem(
        name=f"rosenbrock{dim}",
        bounds=np.tile([-5.0, 10.0], (dim, 1)),
        objective=rosenbrock,
        optimum=0.0,
        optimizers=np.ones((1, dim)),
        parameter_names=_default_names(dim),
        description=f"Rosenbrock function on [-5, 10]^{dim}, global minimum 0 at (1, ..., 1)",
    )


def _make_styblinski_tang(dim: int, seed: int) -> Problem:
    optimum = _STYBLINSKI_TANG_MINIMUM_PER_DIM * dim
    return Problem(
        name=f"styblinski_tang{dim}",
        bounds=np.tile([-5.0, 5.0], (dim, 1)),
        objective=styblinski_tang,
        optimum=optimum,
        optimizers=np.full((1, dim), _STYBLINSKI_TANG_MINIMIZER),
        parameter_names=_default_names(dim),
        description=f"Styblinski-Tang function on [-5, 5]^{dim}, global minimum {optimum:.6f}",
    )


# Minimizer of the i-th term -sin(x) sin^20(i x^2 / pi) on [0, pi] for
# i = 1, ..., 10. The Michalewicz function is a sum of these terms, so the
# first d entries form its global minimizer in dimension d. Each was found by
# a grid search over 2,000,001 points and a bounded scipy minimize_scalar.
_MICHALEWICZ_COORDINATE_MINIMIZERS = [
    2.2029055201716035,
    1.5707963267948966,
    1.2849915705494115,
    1.9230584698654551,
    1.7204697725658575,
    1.5707963267948966,
    1.4544139713617037,
    1.7560865209441525,
    1.6557174168207853,
    1.5707963267948966,
]
# Minima for the dimensions with published values (Surjanovic and Bingham:
# -1.8013, -4.687658, -9.66015). The digits are the sums of the per-term minima.
# NOTE: separability would give the minimum for every d, but only the
# published dimensions are listed, and other d get optimum None.
_MICHALEWICZ_MINIMA = {2: -1.8013034100985537, 5: -4.687658179088146, 10: -9.66015171564134}


def _make_michalewicz(dim: int, seed: int) -> Problem:
    optimum = _MICHALEWICZ_MINIMA.get(dim)
    if optimum is None:
        optimizers = None
        summary = "global minimum not listed for this dimension"
    else:
        optimizers = np.array([_MICHALEWICZ_COORDINATE_MINIMIZERS[:dim]])
        summary = f"global minimum {optimum:.6f}"
    return Problem(
        name=f"michalewicz{dim}",
        bounds=np.tile([0.0, np.pi], (dim, 1)),
        objective=michalewicz,
        optimum=optimum,
        optimizers=optimizers,
        parameter_names=_default_names(dim),
        description=f"Michalewicz function (m = 10) on [0, pi]^{dim}, {summary}",
    )


# Hyperparameter-tuning problems. scikit-learn is imported inside the
# factories, because importing its model modules adds about 0.6 s (measured on
# a 2-core machine) and listing the problems should not pay for that.

_CV_FOLDS = 5


def _cross_validated_loss(model, features, targets, cv, scoring: str) -> float:
    """Return minus the mean score of ``model`` over the folds of ``cv``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import cross_val_score

    # A scikit-learn solver that stops at its iteration limit emits a
    # ConvergenceWarning on every fit, which would flood a long optimization run.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(
            model, features, targets, cv=cv, scoring=scoring, error_score="raise"
        )
    return float(-np.mean(scores))


def _round_integer(value: float, low: int, high: int) -> int:
    # Integer parameters have bounds [low - 0.5, high + 0.5], so rounding gives
    # each integer an interval of the same width 1.
    return int(min(max(math.floor(value + 0.5), low), high))


def _load_standardized_diabetes() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    features, targets = load_diabetes(return_X_y=True)
    # Standardizing the target once with the full-data mean and standard
    # deviation makes the RMSE unitless, so 1.0 is the RMSE of predicting the mean.
    targets = (targets - targets.mean()) / targets.std()
    return features, targets


def _make_svr_diabetes(dim: int, seed: int) -> Problem:
    """Build the support vector regression problem on the diabetes data.

    The model is ``StandardScaler`` followed by an RBF ``SVR``, wrapped in a
    ``TransformedTargetRegressor`` that standardizes the target with the
    statistics of each training fold, so ``epsilon`` is in units of the target
    standard deviation. The objective is the mean over 5 shuffled folds of
    the RMSE on the standardized target (442 samples, 10 features).
    """
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.model_selection import KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    features, targets = _load_standardized_diabetes()
    cv = KFold(n_splits=_CV_FOLDS, shuffle=True, random_state=seed)

    def objective(x: np.ndarray) -> float:
        log10_c, log10_gamma, log10_epsilon = x
        regressor = make_pipeline(
            StandardScaler(),
            SVR(
                kernel="rbf",
                C=10.0**log10_c,
                gamma=10.0**log10_gamma,
                epsilon=10.0**log10_epsilon,
            ),
        )
        model = TransformedTargetRegressor(regressor=regressor, transformer=StandardScaler())
        return _cross_validated_loss(model, features, targets, cv, "neg_root_mean_squared_error")

    # C stops at 1e2 because one evaluation at C = 1e3, gamma near 0.03 and
    # small epsilon took about 1.5 s, against at most 0.25 s for C <= 1e2
    # (scikit-learn 1.9.1 on a 2-core machine, grid over the bounds).
    return Problem(
        name="svr-diabetes",
        bounds=np.array([[-2.0, 2.0], [-4.0, 1.0], [-3.0, 0.0]]),
        objective=objective,
        optimum=None,
        optimizers=None,
        parameter_names=("log10_C", "log10_gamma", "log10_epsilon"),
        description=(
            "RBF SVR on scikit-learn diabetes (standardized inputs and target): "
            "5-fold CV RMSE of the standardized target over log10 C, gamma, epsilon"
        ),
    )


# With this subsample one evaluation took at most 0.6 s, against up to 1.3 s
# with all 1797 images (scikit-learn 1.9.1 on a 2-core machine, grid over the bounds).
_DIGITS_SUBSAMPLE_SIZE = 1000


def _make_svc_digits(dim: int, seed: int) -> Problem:
    """Build the support vector classification problem on the digits data.

    The data are a stratified subsample of 1000 of the 1797 8x8 digit images,
    drawn once with ``random_state=0`` so it is the same for every seed. The
    model is ``StandardScaler`` followed by an RBF ``SVC`` whose decision
    values are mapped to class probabilities by ``CalibratedClassifierCV``
    (sigmoid method, 3 internal folds, ``ensemble=False``). That replaces
    ``SVC(probability=True)``, deprecated in scikit-learn 1.9. The objective
    is the mean log loss over 5 shuffled stratified folds. Log loss is used
    instead of the misclassification rate because it changes smoothly with the
    hyperparameters, while the error rate is piecewise constant.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.datasets import load_digits
    from sklearn.model_selection import StratifiedKFold, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    all_features, all_labels = load_digits(return_X_y=True)
    features, _, labels, _ = train_test_split(
        all_features,
        all_labels,
        train_size=_DIGITS_SUBSAMPLE_SIZE,
        stratify=all_labels,
        random_state=0,
    )
    cv = StratifiedKFold(n_splits=_CV_FOLDS, shuffle=True, random_state=seed)

    def objective(x: np.ndarray) -> float:
        log10_c, log10_gamma = x
        classifier = CalibratedClassifierCV(
            SVC(kernel="rbf", C=10.0**log10_c, gamma=10.0**log10_gamma),
            method="sigmoid",
            cv=3,
            ensemble=False,
        )
        model = make_pipeline(StandardScaler(), classifier)
        return _cross_validated_loss(model, features, labels, cv, "neg_log_loss")

    return Problem(
        name="svc-digits",
        bounds=np.array([[-2.0, 3.0], [-5.0, 0.0]]),
        objective=objective,
        optimum=None,
        optimizers=None,
        parameter_names=("log10_C", "log10_gamma"),
        description=(
            "RBF SVC on a fixed 1000-image subsample of scikit-learn digits: "
            "5-fold CV log loss of sigmoid-calibrated probabilities over log10 C, gamma"
        ),
    )


def _make_gbr_diabetes(dim: int, seed: int) -> Problem:
    """Build the gradient boosting regression problem on the diabetes data.

    ``GradientBoostingRegressor`` with squared error loss and no row
    subsampling, so ``random_state=seed`` only breaks ties between equally
    good splits. ``max_depth`` and ``n_estimators`` are rounded to the
    nearest integer inside the objective. The objective is the mean over 5
    shuffled folds of the RMSE on the standardized target.
    """
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.model_selection import KFold

    features, targets = _load_standardized_diabetes()
    cv = KFold(n_splits=_CV_FOLDS, shuffle=True, random_state=seed)

    def objective(x: np.ndarray) -> float:
        log10_learning_rate, max_depth, n_estimators = x
        model = GradientBoostingRegressor(
            learning_rate=10.0**log10_learning_rate,
            max_depth=_round_integer(max_depth, 1, 5),
            n_estimators=_round_integer(n_estimators, 10, 150),
            random_state=seed,
        )
        return _cross_validated_loss(model, features, targets, cv, "neg_root_mean_squared_error")

    return Problem(
        name="gbr-diabetes",
        bounds=np.array([[-2.0, 0.0], [0.5, 5.5], [9.5, 150.5]]),
        objective=objective,
        optimum=None,
        optimizers=None,
        parameter_names=("log10_learning_rate", "max_depth", "n_estimators"),
        description=(
            "Gradient boosting on scikit-learn diabetes: 5-fold CV RMSE of the standardized "
            "target, with max_depth (1-5) and n_estimators (10-150) rounded to integers"
        ),
    )


# Registry


@dataclasses.dataclass(frozen=True)
class _RegistryEntry:
    """Factory of one problem, or of a family of problems indexed by dimension."""

    factory: Callable[[int, int], Problem]
    default_dim: int
    # Families accept a dimension suffix, but fixed-dimension problems do not.
    variable_dim: bool = False
    min_dim: int = 1


_REGISTRY: dict[str, _RegistryEntry] = {
    "branin": _RegistryEntry(_make_branin, default_dim=2),
    "hartmann3": _RegistryEntry(_make_hartmann3, default_dim=3),
    "hartmann6": _RegistryEntry(_make_hartmann6, default_dim=6),
    "ackley": _RegistryEntry(_make_ackley, default_dim=2, variable_dim=True),
    "levy": _RegistryEntry(_make_levy, default_dim=2, variable_dim=True),
    "rosenbrock": _RegistryEntry(_make_rosenbrock, default_dim=2, variable_dim=True, min_dim=2),
    "styblinski_tang": _RegistryEntry(_make_styblinski_tang, default_dim=2, variable_dim=True),
    "michalewicz": _RegistryEntry(_make_michalewicz, default_dim=2, variable_dim=True),
    "forrester": _RegistryEntry(_make_forrester, default_dim=1),
    "svr-diabetes": _RegistryEntry(_make_svr_diabetes, default_dim=3),
    "svc-digits": _RegistryEntry(_make_svc_digits, default_dim=2),
    "gbr-diabetes": _RegistryEntry(_make_gbr_diabetes, default_dim=3),
}


def _normalize_name(name: str) -> str:
    # Lower case without separators, so "Styblinski-Tang5" matches "styblinski_tang".
    return re.sub(r"[-_\s]", "", name.lower())


_NORMALIZED_NAMES = {_normalize_name(name): name for name in _REGISTRY}


def list_problems() -> list[str]:
    """Return the registered problem names, in registry order.

    Variable-dimension families appear with their default dimension as a
    suffix (``"ackley2"``). Each name is accepted by :func:`get_problem`.
    """
    names = []
    for name, entry in _REGISTRY.items():
        names.append(f"{name}{entry.default_dim}" if entry.variable_dim else name)
    return names


def get_problem(name: str, seed: int = 0) -> Problem:
    """Build a registered benchmark problem by name.

    Parameters
    ----------
    name : str
        Problem name, case-insensitive, with ``-`` and ``_`` interchangeable
        (``"styblinski-tang5"`` equals ``"styblinski_tang5"``). Families of
        variable dimension take the dimension as a suffix (``"ackley10"``),
        and without one they use the default from :func:`list_problems`.
    seed : int
        Seed of the cross-validation shuffling of the scikit-learn problems,
        an integer in [0, 2**32 - 1]. Synthetic problems ignore it.

    Returns
    -------
    Problem

    Raises
    ------
    ValueError
        If the name is not registered, the dimension suffix is invalid for
        the family, or the seed is not a valid integer.

    Examples
    --------
    >>> get_problem("Ackley10").dim
    10
    >>> get_problem("svr-diabetes", seed=1).parameter_names
    ('log10_C', 'log10_gamma', 'log10_epsilon')
    """
    if not isinstance(name, str):
        raise ValueError(
            f"Problem name {name!r} is not a string. Pass a name from list_problems()."
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise ValueError(f"seed = {seed!r} is invalid. Pass an integer in [0, 2**32 - 1].")

    registered, dim = _resolve_name(name)
    return _REGISTRY[registered].factory(dim, int(seed))


def _resolve_name(name: str) -> tuple[str, int]:
    """Return the registry name and the dimension that ``name`` refers to."""
    key = _normalize_name(name)

    # Exact names come first, so "hartmann6" is not read as a family "hartmann" with d = 6.
    registered = _NORMALIZED_NAMES.get(key)
    if registered is not None:
        return registered, _REGISTRY[registered].default_dim

    match = re.fullmatch(r"(?P<family>.*?)(?P<dim>\d+)", key)
    registered = _NORMALIZED_NAMES.get(match["family"]) if match else None
    if registered is None or not _REGISTRY[registered].variable_dim:
        families = [family for family, entry in _REGISTRY.items() if entry.variable_dim]
        raise ValueError(
            f"Problem {name!r} not found. Available problems: {', '.join(list_problems())}. "
            f"The families {', '.join(families)} accept a dimension suffix, e.g. 'ackley10'."
        )

    entry = _REGISTRY[registered]
    dim = int(match["dim"])
    if dim < entry.min_dim:
        raise ValueError(
            f"Problem name {name!r} requests dimension {dim}, but {registered} needs at "
            f"least {entry.min_dim}. Use e.g. '{registered}{entry.default_dim}'."
        )
    return registered, dim
