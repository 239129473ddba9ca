r"""Scores for predictive distributions and for classifiers.

Regression metrics take a predictive distribution with batch shape ``(m,)`` and observed
targets ``y`` of shape ``(m,)``, on the same scale (the original target scale in probnn),
and return the mean over the ``m`` points. They use only the numpyro ``Distribution``
interface (``log_prob``, ``mean``, ``cdf``, ``icdf``, ``sample``) plus closed forms for the
families where one exists, so any numpyro distribution with those methods can be scored.

The continuous ranked probability score (CRPS) of a predictive :math:`F` at :math:`y` is

.. math::

    \mathrm{CRPS}(F, y) = \int (F(x) - \mathbb{1}\{x \ge y\})^2 \, dx
                        = \mathbb{E}|X - y| - \tfrac{1}{2} \mathbb{E}|X - X'|,

with :math:`X, X'` independent draws from :math:`F` (Gneiting and Raftery, JASA 2007).
Lower is better for the negative log likelihood, the errors and the CRPS.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import scipy.special
from jax.typing import ArrayLike
from jaxtyping import Float, Int

#: Probabilities are clipped to at least this value before the logarithm in
#: :func:`classification_nll`, so a confidently wrong prediction costs at most
#: ``-log(1e-12)``, about 27.6 nats, instead of infinity.
CLASSIFICATION_EPSILON = 1e-12

#: Rows of class probabilities must sum to 1 within this absolute tolerance.
PROBABILITY_SUM_TOLERANCE = 1e-6

#: Bisection in :func:`quantile` stops when the bracket is narrower than this times
#: ``max(|x|, s)``, with ``s`` the predictive's standard deviation (or bracket scale).
QUANTILE_RELATIVE_TOLERANCE = 1e-10

#: Largest number of entries in the (points, K (K - 1) / 2) arrays of component pairs in
#: the mixture CRPS. Points are processed in chunks of this size, about 16 MiB per float64 array.
MIXTURE_CRPS_CHUNK_ENTRIES = 2**21

_DEFAULT_LEVELS = (0.5, 0.9, 0.95)


# -- input checks --------------------------------------------------------------------------


def _batch_size(predictive) -> int:
    """Return ``m`` for a predictive with batch shape ``(m,)``, or raise ``ValueError``."""
    if not isinstance(predictive, dist.Distribution):
        raise ValueError(
            f"predictive must be a numpyro Distribution with batch shape (m,), such as "
            f"posterior.predict(X_test); got {type(predictive).__name__}."
        )
    if predictive.event_shape != ():
        raise ValueError(
            f"predictive must be univariate (event shape ()), got event shape {predictive.event_shape}. "
            "Score each output separately."
        )
    if len(predictive.batch_shape) != 1:
        raise ValueError(
            f"predictive must have batch shape (m,), one distribution per test point; got batch shape "
            f"{predictive.batch_shape}."
        )
    return predictive.batch_shape[0]


def _check_targets(predictive, y) -> np.ndarray:
    """Return ``y`` as float64 of shape ``(m,)`` matching the predictive, or raise ``ValueError``."""
    m = _batch_size(predictive)
    y = np.asarray(y)
    if y.shape != (m,):
        raise ValueError(
            f"y has shape {y.shape} but the predictive has batch shape {predictive.batch_shape}; pass "
            "one target per predictive distribution, as a 1-d array."
        )
    if m == 0:
        raise ValueError("y and the predictive are empty; there is nothing to score.")
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise ValueError(f"y must contain real numbers, got dtype {y.dtype}.")
    y = y.astype(np.float64)
    not_finite = np.flatnonzero(~np.isfinite(y))
    if not_finite.size:
        raise ValueError(
            f"y contains {not_finite.size} NaN or infinite values (first at indices "
            f"{not_finite[:5].tolist()}); remove those points from both y and the test inputs."
        )
    return y


def _as_numpy(value, m: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (m,))


@functools.partial(jax.jit, static_argnames="method")
def _call_compiled(predictive, value, method):
    return getattr(predictive, method)(value)


@functools.partial(jax.jit, static_argnames="name")
def _get_compiled(predictive, name):
    return getattr(predictive, name)


def _call(predictive, method: str, value) -> np.ndarray:
    """Return ``predictive.<method>(value)`` as a float64 NumPy array.

    The call is compiled, because numpyro evaluates a mixture's log density eagerly as
    dozens of small programs that take seconds to compile for each new shape. A
    predictive that cannot be traced (not a pytree, or Python control flow on values)
    is evaluated eagerly instead.
    """
    value = jnp.asarray(value)
    try:
        result = _call_compiled(predictive, value, method)
    except TypeError:
        result = getattr(predictive, method)(value)
    return np.asarray(result, dtype=np.float64)


def _get(predictive, name: str) -> np.ndarray:
    """Return the property ``predictive.<name>`` as a float64 NumPy array, compiled like :func:`_call`."""
    try:
        result = _get_compiled(predictive, name)
    except TypeError:
        result = getattr(predictive, name)
    return np.asarray(result, dtype=np.float64)


# -- point errors and log likelihood ---------------------------------------------------------


def negative_log_likelihood(predictive: dist.Distribution, y: Float[ArrayLike, "m"]) -> float:
    """Return the mean negative log predictive density, ``-mean(log p(y_i))``."""
    y = _check_targets(predictive, y)
    log_density = _call(predictive, "log_prob", y)
    return float(-np.mean(log_density))


def _predictive_mean(predictive, m: int) -> np.ndarray:
    mean = _as_numpy(_get(predictive, "mean"), m)
    if not np.all(np.isfinite(mean)):
        raise ValueError(
            f"The predictive mean is not finite at {np.sum(~np.isfinite(mean))} points, so point errors "
            "are undefined (a Student-t predictive needs more than 1 degree of freedom for a mean)."
        )
    return mean


def rmse(predictive: dist.Distribution, y: Float[ArrayLike, "m"]) -> float:
    """Return the root mean squared error of the predictive mean."""
    y = _check_targets(predictive, y)
    return float(np.sqrt(np.mean((_predictive_mean(predictive, y.size) - y) ** 2)))


def mean_absolute_error(predictive: dist.Distribution, y: Float[ArrayLike, "m"]) -> float:
    """Return the mean absolute error of the predictive mean.

    The mean, not the median, is the point prediction, to match :func:`rmse`.
    """
    y = _check_targets(predictive, y)
    return float(np.mean(np.abs(_predictive_mean(predictive, y.size) - y)))


# -- CRPS ------------------------------------------------------------------------------------


def crps(
    predictive: dist.Distribution,
    y: Float[ArrayLike, "m"],
    *,
    key=None,
    num_samples: int = 1000,
) -> float:
    r"""Return the mean continuous ranked probability score over the points.

    Closed forms are used for these predictives:

    - ``Normal``: :math:`\sigma [z (2\Phi(z) - 1) + 2\varphi(z) - 1/\sqrt{\pi}]` with
      :math:`z = (y - \mu)/\sigma` (Gneiting, Raftery, Westveld and Goldman, 2005).
    - ``StudentT`` with :math:`\nu > 1`:
      :math:`\sigma [z (2F_\nu(z) - 1) + 2 f_\nu(z) \frac{\nu + z^2}{\nu - 1}
      - \frac{2\sqrt{\nu}\, B(\frac12, \nu - \frac12)}{(\nu - 1) B(\frac12, \frac\nu2)^2}]`
      (Jordan, Krüger and Lerch, J. Stat. Softw. 2019). With :math:`\nu \le 1` the mean
      absolute error is infinite, and so is the score.
    - ``MixtureSameFamily`` of ``Normal`` components: the exact
      :math:`\sum_k w_k A(y - \mu_k, \sigma_k) - \frac12 \sum_{k,l} w_k w_l
      A(\mu_k - \mu_l, \sqrt{\sigma_k^2 + \sigma_l^2})` with
      :math:`A(\mu, \sigma) = \mathbb{E}|N(\mu, \sigma^2)|` (Grimit, Gneiting, Berrocal and
      Johnson, 2006). It costs :math:`O(m K^2)` time and is computed in chunks of points so
      memory stays near ``MIXTURE_CRPS_CHUNK_ENTRIES`` entries per array. Scale mixtures
      (components of a point sharing one mean) skip the normal cdf in the pair term. With
      m = 4000 and K = 512 a scale mixture took about 10 s and a general mixture about
      30 s on 2 shared CPU cores.

    Any other predictive is scored by the unbiased sample estimate
    :math:`\frac1S \sum_s |x_s - y| - \frac{1}{2S(S-1)} \sum_{s,t} |x_s - x_t|` from
    ``num_samples`` draws per point, which needs ``key``.

    Parameters
    ----------
    predictive : numpyro Distribution with batch shape (m,)
    y : array of shape (m,)
    key : jax.random key, optional
        Required only when no closed form applies.
    num_samples : int
        Draws per point for the sample estimate; its standard error falls as
        ``1 / sqrt(num_samples)``.
    """
    y = _check_targets(predictive, y)
    m = y.size
    if isinstance(predictive, dist.Normal):
        scores = _crps_normal(_as_numpy(predictive.loc, m), _as_numpy(predictive.scale, m), y)
    elif isinstance(predictive, dist.StudentT):
        scores = _crps_student_t(
            _as_numpy(predictive.df, m), _as_numpy(predictive.loc, m), _as_numpy(predictive.scale, m), y
        )
    elif _is_normal_mixture(predictive):
        scores = _crps_normal_mixture(*_normal_mixture_parameters(predictive, m), y)
    else:
        scores = _crps_from_samples(predictive, y, key, num_samples)
    return float(np.mean(scores))


def _crps_normal(loc, scale, y):
    z = (y - loc) / scale
    return scale * (z * (2.0 * scipy.special.ndtr(z) - 1.0) + 2.0 * _standard_normal_pdf(z) - 1.0 / np.sqrt(np.pi))


def _standard_normal_pdf(z):
    return np.exp(-0.5 * z**2) / np.sqrt(2.0 * np.pi)


def _crps_student_t(df, loc, scale, y):
    z = (y - loc) / scale
    with np.errstate(invalid="ignore", divide="ignore"):
        density = np.exp(
            scipy.special.gammaln((df + 1.0) / 2.0)
            - scipy.special.gammaln(df / 2.0)
            - 0.5 * np.log(np.pi * df)
            - (df + 1.0) / 2.0 * np.log1p(z**2 / df)
        )
        # The last term is E|Z - Z'| / 2 for independent standard Student-t draws, in logs
        # because the beta functions overflow for large df.
        log_half_spread = (
            np.log(2.0)
            + 0.5 * np.log(df)
            + scipy.special.betaln(0.5, df - 0.5)
            - np.log(df - 1.0)
            - 2.0 * scipy.special.betaln(0.5, df / 2.0)
        )
        score = scale * (
            z * (2.0 * scipy.special.stdtr(df, z) - 1.0)
            + 2.0 * density * (df + z**2) / (df - 1.0)
            - np.exp(log_half_spread)
        )
    return np.where(df > 1.0, score, np.inf)


def _is_normal_mixture(predictive) -> bool:
    return isinstance(predictive, dist.MixtureSameFamily) and isinstance(
        predictive.component_distribution, dist.Normal
    )


def _normal_mixture_parameters(predictive, m: int):
    """Return the weights, means and scales of a Normal mixture, each of shape ``(m, K)``."""
    components = predictive.component_distribution
    shape = (m, predictive.mixture_size)
    weights = np.broadcast_to(np.asarray(predictive.mixing_distribution.probs, dtype=np.float64), shape)
    loc = np.broadcast_to(np.asarray(components.loc, dtype=np.float64), shape)
    scale = np.broadcast_to(np.asarray(components.scale, dtype=np.float64), shape)
    return weights, loc, scale


def _expected_absolute_normal(mu, sigma):
    """Return ``E|N(mu, sigma^2)|``, equal to ``|mu|`` where ``sigma`` is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        z = mu / sigma
        value = mu * (2.0 * scipy.special.ndtr(z) - 1.0) + 2.0 * sigma * _standard_normal_pdf(z)
    return np.where(sigma > 0.0, value, np.abs(mu))


def _crps_normal_mixture(weights, loc, scale, y):
    m, num_components = weights.shape
    # Each unordered pair of components counts twice in E|X - X'|, and a component paired
    # with itself contributes A(0, sqrt(2) sigma_k) = 2 sigma_k / sqrt(pi).
    first, second = np.triu_indices(num_components, k=1)
    chunk = max(1, MIXTURE_CRPS_CHUNK_ENTRIES // max(first.size, num_components))
    # In a scale mixture every component of a point has the same mean, and then
    # A(0, s) = s sqrt(2 / pi) needs no normal cdf, which dominates the cost otherwise.
    same_mean = np.all(loc == loc[:, :1], axis=1)

    scores = np.empty(m)
    for start in range(0, m, chunk):
        part = slice(start, start + chunk)
        w, mu, sigma = weights[part], loc[part], scale[part]

        to_target = np.sum(w * _expected_absolute_normal(y[part, None] - mu, sigma), axis=1)

        pair_scale = np.sqrt(sigma[:, first] ** 2 + sigma[:, second] ** 2)
        if np.all(same_mean[part]):
            pair_term = np.sqrt(2.0 / np.pi) * pair_scale
        else:
            pair_term = _expected_absolute_normal(mu[:, first] - mu[:, second], pair_scale)
        spread = np.sum(w**2 * sigma, axis=1) * 2.0 / np.sqrt(np.pi) + 2.0 * np.sum(
            w[:, first] * w[:, second] * pair_term, axis=1
        )

        scores[part] = to_target - 0.5 * spread
    return scores


def _crps_from_samples(predictive, y, key, num_samples):
    if key is None:
        raise ValueError(
            f"crps has no closed form for {type(predictive).__name__} and estimates it from samples; "
            "pass key=jax.random.key(seed)."
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 2:
        raise ValueError(f"num_samples must be an integer >= 2, got {num_samples!r}.")
    samples = np.sort(np.asarray(predictive.sample(key, (num_samples,)), dtype=np.float64), axis=0)

    to_target = np.mean(np.abs(samples - y), axis=0)
    # For sorted samples, sum_{s,t} |x_s - x_t| = 2 sum_i (2i - S - 1) x_(i) with i = 1..S.
    ranks = np.arange(1, num_samples + 1)[:, None]
    pair_sum = 2.0 * np.sum((2 * ranks - num_samples - 1) * samples, axis=0)
    return to_target - pair_sum / (2.0 * num_samples * (num_samples - 1))


# -- quantiles, coverage and calibration ------------------------------------------------------


def quantile(predictive: dist.Distribution, q: Float[ArrayLike, "..."]) -> np.ndarray:
    """Return the predictive quantiles at probabilities ``q``.

    Uses the distribution's ``icdf`` when it has one. Otherwise (numpyro's
    ``MixtureSameFamily``, for one) the quantile is found by bisection on ``cdf``, all
    points and probabilities at once. The bracket starts at the mean plus or minus the
    standard deviation (for a mixture, the spread of its components) and doubles until it
    contains the quantile. Bisection stops at a relative tolerance of
    ``QUANTILE_RELATIVE_TOLERANCE``.

    Parameters
    ----------
    predictive : numpyro Distribution with batch shape (m,)
    q : float or array
        Probabilities strictly between 0 and 1, broadcastable against ``(m,)``: a scalar,
        shape ``(m,)``, or shape ``(L, 1)`` for ``L`` probabilities at every point.

    Returns
    -------
    numpy.ndarray of shape ``broadcast(q.shape, (m,))``
    """
    m = _batch_size(predictive)
    q = np.asarray(q, dtype=np.float64)
    if not np.all((q > 0.0) & (q < 1.0)):
        raise ValueError(f"q must contain probabilities strictly between 0 and 1, got {q.ravel()[:5]}.")
    try:
        shape = np.broadcast_shapes(q.shape, (m,))
    except ValueError:
        raise ValueError(
            f"q of shape {q.shape} does not broadcast against the predictive's batch shape ({m},); pass "
            "a scalar, shape (m,), or shape (L, 1)."
        ) from None

    try:
        values = _call(predictive, "icdf", q)
    except NotImplementedError:
        return _bisect_quantile(predictive, np.broadcast_to(q, shape), m)
    return np.array(np.broadcast_to(values, shape))


def _bracket_start(predictive, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Return a centre and a positive half-width per point from which to search for quantiles.

    The centre is the mean. The half-width is the standard deviation, or for a mixture the
    largest distance from the mean to a component's mean plus that component's standard
    deviation, so the bracket covers the bulk of every component.
    """
    try:
        center = _as_numpy(_get(predictive, "mean"), m)
        if isinstance(predictive, dist.MixtureSameFamily):
            component_mean = _get(predictive, "component_mean")
            component_std = np.sqrt(_get(predictive, "component_variance"))
            half_width = _as_numpy(np.max(np.abs(component_mean - center[:, None]) + component_std, axis=-1), m)
        else:
            half_width = np.sqrt(_as_numpy(_get(predictive, "variance"), m))
    except (NotImplementedError, ValueError):
        center, half_width = np.zeros(m), np.ones(m)
    # Heavy tails (no mean or variance) or a point mass: start from a unit bracket, which
    # the doubling in _bisect_quantile widens as far as needed.
    usable = np.isfinite(center) & np.isfinite(half_width) & (half_width > 0.0)
    return np.where(usable, center, 0.0), np.where(usable, half_width, 1.0)


def _bisect_quantile(predictive, q: np.ndarray, m: int) -> np.ndarray:
    def cdf(x):
        return _call(predictive, "cdf", x)

    center, half_width = _bracket_start(predictive, m)
    center = np.broadcast_to(center, q.shape)
    half_width = np.broadcast_to(half_width, q.shape)

    multiple = np.ones(q.shape)
    for _ in range(64):
        below = cdf(center - multiple * half_width) > q
        above = cdf(center + multiple * half_width) < q
        unbracketed = below | above
        if not unbracketed.any():
            break
        multiple = np.where(unbracketed, 2.0 * multiple, multiple)
    else:
        raise ValueError(
            f"quantile could not bracket {int(unbracketed.sum())} quantiles within 2**64 standard "
            f"deviations of the mean; check that {type(predictive).__name__}.cdf is a valid "
            "distribution function."
        )

    lower = center - multiple * half_width
    upper = center + multiple * half_width
    # Each step halves every bracket, so about 40 + log2(multiple) steps reach the tolerance.
    for _ in range(200):
        tolerance = QUANTILE_RELATIVE_TOLERANCE * np.maximum(np.maximum(np.abs(lower), np.abs(upper)), half_width)
        if np.all(upper - lower <= tolerance):
            break
        middle = 0.5 * (lower + upper)
        go_right = cdf(middle) < q
        lower = np.where(go_right, middle, lower)
        upper = np.where(go_right, upper, middle)
    return 0.5 * (lower + upper)


def probability_integral_transform(predictive: dist.Distribution, y: Float[ArrayLike, "m"]) -> np.ndarray:
    """Return the predictive cdf at each target, ``F_i(y_i)``, as an array of shape ``(m,)``.

    For a calibrated predictive these values are uniform on [0, 1].
    """
    y = _check_targets(predictive, y)
    return _call(predictive, "cdf", y)


def _check_levels(levels) -> np.ndarray:
    levels = np.asarray(levels, dtype=np.float64)
    if levels.ndim != 1 or levels.size == 0 or not np.all((levels > 0.0) & (levels < 1.0)):
        raise ValueError(
            f"levels must be a non-empty 1-d sequence of probabilities strictly between 0 and 1, got "
            f"{levels.tolist()}."
        )
    return levels


def _central_interval_hits(predictive, y: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Return booleans of shape ``(len(levels), m)``: is ``y_i`` in the central interval at each level.

    ``y`` lies in the closed central interval of probability ``a`` exactly when
    ``(1 - a)/2 <= F(y) <= (1 + a)/2`` for a continuous cdf ``F``, which needs one cdf
    evaluation per point instead of two quantile searches.
    """
    lower_q = (1.0 - levels[:, None]) / 2.0
    upper_q = (1.0 + levels[:, None]) / 2.0
    try:
        pit = _call(predictive, "cdf", y)
    except NotImplementedError:
        lower = quantile(predictive, lower_q)
        upper = quantile(predictive, upper_q)
        return (lower <= y) & (y <= upper)
    return (lower_q <= pit) & (pit <= upper_q)


def interval_coverage(
    predictive: dist.Distribution, y: Float[ArrayLike, "m"], levels=_DEFAULT_LEVELS
) -> dict[float, float]:
    """Return, for each level, the fraction of targets inside the central predictive interval.

    The central interval at level ``a`` runs from the ``(1 - a)/2`` to the ``(1 + a)/2``
    quantile, ends included. A calibrated predictive covers a fraction ``a`` of the targets.
    """
    y = _check_targets(predictive, y)
    levels = _check_levels(levels)
    hits = _central_interval_hits(predictive, y, levels)
    return {float(level): float(fraction) for level, fraction in zip(levels, hits.mean(axis=1))}


def calibration_curve(
    predictive: dist.Distribution, y: Float[ArrayLike, "m"], levels=np.linspace(0.05, 0.95, 19)
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(nominal, observed)`` coverage of central intervals, for a reliability plot.

    ``observed[j]`` is the fraction of targets inside the central interval at level
    ``nominal[j]``; a calibrated predictive gives points near the diagonal.
    """
    y = _check_targets(predictive, y)
    levels = _check_levels(levels)
    return levels, _central_interval_hits(predictive, y, levels).mean(axis=1)


def regression_metrics(predictive: dist.Distribution, y: Float[ArrayLike, "m"], *, key=None) -> dict[str, float]:
    """Return the standard regression scores of a predictive as a dict of floats.

    Keys: ``nll``, ``rmse``, ``crps``, ``coverage_50``, ``coverage_90``, ``coverage_95``.
    ``key`` is needed only when the CRPS has no closed form for the predictive (see
    :func:`crps`).
    """
    y = _check_targets(predictive, y)
    coverage = interval_coverage(predictive, y, levels=(0.5, 0.9, 0.95))
    return {
        "nll": negative_log_likelihood(predictive, y),
        "rmse": rmse(predictive, y),
        "crps": crps(predictive, y, key=key),
        "coverage_50": coverage[0.5],
        "coverage_90": coverage[0.9],
        "coverage_95": coverage[0.95],
    }


# -- classification ---------------------------------------------------------------------------


def _check_classification(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] < 2:
        raise ValueError(
            f"probs must have shape (n, C) with n >= 1 points and C >= 2 classes, got shape {probs.shape}."
        )
    if labels.shape != (probs.shape[0],):
        raise ValueError(
            f"labels has shape {labels.shape} but probs has shape {probs.shape}; pass one label per row."
        )

    if not np.all(np.isfinite(probs)) or np.any(probs < 0.0):
        rows = np.flatnonzero(~np.all(np.isfinite(probs) & (probs >= 0.0), axis=1))
        raise ValueError(
            f"probs must be finite and non-negative; rows {rows[:5].tolist()} are not. Pass softmax "
            "outputs, not logits."
        )
    row_error = np.abs(probs.sum(axis=1) - 1.0)
    if np.any(row_error > PROBABILITY_SUM_TOLERANCE):
        rows = np.flatnonzero(row_error > PROBABILITY_SUM_TOLERANCE)
        raise ValueError(
            f"Each row of probs must sum to 1 within {PROBABILITY_SUM_TOLERANCE}; {rows.size} rows do not "
            f"(first {rows[:5].tolist()}, sums {probs[rows[:5]].sum(axis=1).tolist()}). Normalise the rows."
        )

    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels) & (labels == np.round(labels))):
            raise ValueError("labels must be integer class indices; found non-integer or NaN values.")
        labels = labels.astype(np.int64)
    elif not np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}.")
    num_classes = probs.shape[1]
    outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if outside.size:
        raise ValueError(
            f"labels must lie in 0 to {num_classes - 1} for {num_classes} classes; found "
            f"{labels[outside[:5]].tolist()} at indices {outside[:5].tolist()}."
        )
    return probs, labels


def accuracy(probs: Float[ArrayLike, "n C"], labels: Int[ArrayLike, "n"]) -> float:
    """Return the fraction of points whose most probable class is the label (ties go to the lower class)."""
    probs, labels = _check_classification(probs, labels)
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def classification_nll(probs: Float[ArrayLike, "n C"], labels: Int[ArrayLike, "n"]) -> float:
    """Return the mean of ``-log p(label)``, with probabilities clipped below at ``CLASSIFICATION_EPSILON``."""
    probs, labels = _check_classification(probs, labels)
    true_class = probs[np.arange(labels.size), labels]
    return float(-np.mean(np.log(np.maximum(true_class, CLASSIFICATION_EPSILON))))


def expected_calibration_error(
    probs: Float[ArrayLike, "n C"], labels: Int[ArrayLike, "n"], num_bins: int = 15
) -> float:
    r"""Return the expected calibration error of the top-class confidence.

    Confidences (the largest probability per row) fall into ``num_bins`` equal-width bins
    ``(b/B, (b+1)/B]``, and

    .. math::

        \mathrm{ECE} = \sum_b \frac{n_b}{n} \left| \mathrm{acc}_b - \mathrm{conf}_b \right|,

    with :math:`\mathrm{acc}_b` and :math:`\mathrm{conf}_b` the accuracy and mean confidence
    of the :math:`n_b` points in bin :math:`b` (Guo, Pleiss, Sun and Weinberger, ICML 2017).
    """
    probs, labels = _check_classification(probs, labels)
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}.")
    confidence = probs.max(axis=1)
    correct = np.argmax(probs, axis=1) == labels

    # Bin b contains confidences in (b/B, (b+1)/B], so ceil maps an upper edge to its own bin.
    bins = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    accuracy_sum = np.bincount(bins, weights=correct, minlength=num_bins)
    confidence_sum = np.bincount(bins, weights=confidence, minlength=num_bins)
    return float(np.sum(np.abs(accuracy_sum - confidence_sum)) / labels.size)


def classification_metrics(probs: Float[ArrayLike, "n C"], labels: Int[ArrayLike, "n"]) -> dict[str, float]:
    """Return ``accuracy``, ``nll`` and ``ece`` (15 bins) as a dict of floats."""
    return {
        "accuracy": accuracy(probs, labels),
        "nll": classification_nll(probs, labels),
        "ece": expected_calibration_error(probs, labels),
    }
