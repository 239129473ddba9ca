"""Regression and classification metrics against closed forms and Monte Carlo estimates.

Monte Carlo checks draw 200,000 samples from a fixed seed and allow 5 standard errors,
so with another seed each comparison would fail by chance with probability about 6e-7.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
import scipy.optimize
import scipy.stats

from probnn import metrics
from probnn.processes.exact import StudentTPredictive

NUM_MC = 200_000
MC_STANDARD_ERRORS = 5.0


def normal(loc, scale):
    return dist.Normal(jnp.asarray(loc, dtype=float), jnp.asarray(scale, dtype=float))


def student_t(df, loc, scale):
    return StudentTPredictive(
        jnp.asarray(df, dtype=float), jnp.asarray(loc, dtype=float), jnp.asarray(scale, dtype=float)
    )


def normal_mixture(weights, loc, scale):
    """Mixture with batch shape (m,) from arrays of shape (m, K)."""
    return dist.MixtureSameFamily(
        dist.Categorical(probs=jnp.asarray(weights, dtype=float)),
        dist.Normal(jnp.asarray(loc, dtype=float), jnp.asarray(scale, dtype=float)),
    )


def random_mixture(rng, m, K):
    return normal_mixture(
        rng.dirichlet(np.ones(K), size=m), rng.normal(0.0, 2.0, size=(m, K)), rng.uniform(0.3, 1.5, size=(m, K))
    )


def monte_carlo_crps(draws, other_draws, y):
    """Return the CRPS estimate E|X - y| - E|X - X'| / 2 per point and its standard error.

    ``draws`` and ``other_draws`` are independent, of shape (N, m).
    """
    terms = np.abs(draws - y) - 0.5 * np.abs(draws - other_draws)
    return terms.mean(axis=0), terms.std(axis=0) / np.sqrt(draws.shape[0])


def draw_normal_mixture(rng, weights, loc, scale, num_draws):
    """Draw ``num_draws`` samples per point with NumPy, as an array of shape (num_draws, m)."""
    m, K = weights.shape
    uniforms = rng.uniform(size=(num_draws, m, 1))
    components = np.minimum((uniforms > np.cumsum(weights, axis=1)).sum(axis=-1), K - 1)
    points = np.arange(m)
    return rng.normal(loc[points, components], scale[points, components])


def per_point_crps(make_predictive, parameters, y):
    """Score each point with its own one-point predictive, so per-point values can be compared."""
    return np.array(
        [metrics.crps(make_predictive(*(p[i : i + 1] for p in parameters)), y[i : i + 1]) for i in range(y.size)]
    )


# -- log likelihood and point errors ---------------------------------------------------------


def test_normal_nll_matches_scipy():
    loc, scale, y = np.array([0.0, 1.0, -2.0]), np.array([1.0, 0.5, 3.0]), np.array([0.3, 2.0, 4.0])
    expected = -np.mean(scipy.stats.norm.logpdf(y, loc, scale))
    assert metrics.negative_log_likelihood(normal(loc, scale), y) == pytest.approx(expected, rel=1e-12)


def test_student_t_nll_matches_scipy():
    df, loc, scale, y = np.array([3.0, 7.0]), np.array([0.0, 1.0]), np.array([2.0, 0.5]), np.array([5.0, 1.2])
    expected = -np.mean(scipy.stats.t.logpdf(y, df, loc, scale))
    assert metrics.negative_log_likelihood(student_t(df, loc, scale), y) == pytest.approx(expected, rel=1e-10)


def test_point_errors_use_predictive_mean():
    predictive = normal([1.0, 2.0, 3.0], [10.0, 10.0, 10.0])
    y = np.array([1.0, 4.0, 0.0])
    assert metrics.rmse(predictive, y) == pytest.approx(np.sqrt((0.0 + 4.0 + 9.0) / 3.0), rel=1e-12)
    assert metrics.mean_absolute_error(predictive, y) == pytest.approx(5.0 / 3.0, rel=1e-12)


def test_mixture_rmse_uses_mixture_mean():
    predictive = normal_mixture([[0.25, 0.75]], [[-2.0, 2.0]], [[1.0, 1.0]])
    assert metrics.rmse(predictive, np.array([0.0])) == pytest.approx(1.0, rel=1e-12)


# -- CRPS ------------------------------------------------------------------------------------


def test_normal_crps_matches_monte_carlo():
    loc, scale, y = np.array([0.0, 1.0, -2.0]), np.array([1.0, 0.5, 3.0]), np.array([0.3, 2.5, 4.0])
    rng = np.random.default_rng(0)
    draws, other_draws = rng.normal(loc, scale, (2, NUM_MC, 3))
    estimate, standard_error = monte_carlo_crps(draws, other_draws, y)
    closed_form = per_point_crps(normal, (loc, scale), y)
    assert np.all(np.abs(closed_form - estimate) < MC_STANDARD_ERRORS * standard_error)


def test_normal_crps_at_mean_is_closed_form():
    # At y = mu the score is sigma (sqrt(2) - 1) / sqrt(pi).
    expected = 2.0 * (np.sqrt(2.0) - 1.0) / np.sqrt(np.pi)
    assert metrics.crps(normal([3.0], [2.0]), np.array([3.0])) == pytest.approx(expected, rel=1e-12)


def test_student_t_crps_matches_monte_carlo():
    df = np.array([2.5, 4.0, 30.0])
    loc, scale, y = np.array([0.0, 1.0, -2.0]), np.array([1.0, 0.5, 3.0]), np.array([0.3, 3.0, 4.0])
    rng = np.random.default_rng(1)
    draws, other_draws = loc + scale * rng.standard_t(df, (2, NUM_MC, 3))
    estimate, standard_error = monte_carlo_crps(draws, other_draws, y)
    closed_form = per_point_crps(student_t, (df, loc, scale), y)
    assert np.all(np.abs(closed_form - estimate) < MC_STANDARD_ERRORS * standard_error)


def test_student_t_crps_approaches_normal():
    y = np.array([-1.0, 0.2, 3.0])
    loc, scale = np.array([0.0, 0.0, 1.0]), np.array([1.0, 2.0, 0.5])
    t_score = metrics.crps(student_t(np.full(3, 1e7), loc, scale), y)
    normal_score = metrics.crps(normal(loc, scale), y)
    assert t_score == pytest.approx(normal_score, rel=1e-6)


def test_student_t_crps_infinite_without_mean():
    assert metrics.crps(student_t([1.0], [0.0], [1.0]), np.array([0.5])) == np.inf


def test_mixture_crps_matches_monte_carlo():
    weights = np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    loc = np.array([[-3.0, 0.0, 2.0], [1.0, 1.5, 8.0], [0.0, 0.0, 0.0]])
    scale = np.array([[0.5, 1.0, 0.3], [0.2, 2.0, 1.0], [0.1, 1.0, 5.0]])
    y = np.array([0.5, 7.0, -1.0])
    rng = np.random.default_rng(2)
    draws = draw_normal_mixture(rng, weights, loc, scale, NUM_MC)
    other_draws = draw_normal_mixture(rng, weights, loc, scale, NUM_MC)
    estimate, standard_error = monte_carlo_crps(draws, other_draws, y)
    closed_form = per_point_crps(normal_mixture, (weights, loc, scale), y)
    assert np.all(np.abs(closed_form - estimate) < MC_STANDARD_ERRORS * standard_error)


def test_single_component_mixture_crps_equals_normal():
    loc, scale, y = np.array([0.0, 1.0]), np.array([1.0, 0.5]), np.array([0.3, -1.0])
    mixture = normal_mixture(np.ones((2, 1)), loc[:, None], scale[:, None])
    assert metrics.crps(mixture, y) == pytest.approx(metrics.crps(normal(loc, scale), y), rel=1e-12)


def test_large_mixture_crps_chunks_consistently():
    # K = 300 puts 23 points in a chunk, so 50 points span three chunks, the last one partial.
    rng = np.random.default_rng(3)
    m, K = 50, 300
    assert metrics.MIXTURE_CRPS_CHUNK_ENTRIES // K**2 < m
    weights, loc, scale = rng.dirichlet(np.ones(K), size=m), rng.normal(size=(m, K)), rng.uniform(0.5, 1.0, (m, K))
    y = rng.normal(size=m)
    batch = metrics.crps(normal_mixture(weights, loc, scale), y)
    single = per_point_crps(normal_mixture, (weights, loc, scale), y)
    assert batch == pytest.approx(single.mean(), rel=1e-12)


def test_sample_crps_matches_closed_form():
    # An affine transform of a Normal is not a Normal instance, so crps scores it from
    # samples. The estimate's standard error is about 0.6 / sqrt(20000 * 20) = 0.001 here.
    loc, scale = np.linspace(-1.0, 1.0, 20), np.linspace(0.5, 1.5, 20)
    y = np.linspace(-2.0, 3.0, 20)
    transformed = dist.TransformedDistribution(
        dist.Normal(jnp.zeros(20), jnp.ones(20)), dist.transforms.AffineTransform(jnp.asarray(loc), jnp.asarray(scale))
    )
    estimate = metrics.crps(transformed, y, key=jax.random.key(4), num_samples=20_000)
    assert estimate == pytest.approx(metrics.crps(normal(loc, scale), y), abs=0.006)


def test_sample_crps_unbiased_with_few_samples():
    # With 4 draws per point the plug-in estimate, which divides the pair sum by S^2,
    # would be too high by E|X - X'| / 8 = 0.14 here. The unbiased one has a per-point
    # standard deviation of about 0.17, so its mean over 20000 points has a standard
    # error of about 0.0012, and the tolerance of 0.01 is 8 standard errors.
    m = 20_000
    transformed = dist.TransformedDistribution(
        dist.Normal(jnp.zeros(m), jnp.ones(m)), dist.transforms.AffineTransform(0.0, 1.0)
    )
    y = np.zeros(m)
    estimate = metrics.crps(transformed, y, key=jax.random.key(5), num_samples=4)
    assert estimate == pytest.approx(metrics.crps(normal(np.zeros(m), np.ones(m)), y), abs=0.01)


def test_sample_crps_requires_key():
    mixture = dist.MixtureSameFamily(dist.Categorical(probs=jnp.ones((2, 1))), dist.StudentT(3.0 * jnp.ones((2, 1))))
    with pytest.raises(ValueError, match=r"pass key=jax\.random\.key"):
        metrics.crps(mixture, np.zeros(2))


# -- quantiles --------------------------------------------------------------------------------


def mixture_cdf(x, weights, loc, scale):
    return float(np.sum(weights * scipy.stats.norm.cdf(x, loc, scale)))


def test_mixture_quantile_matches_root_finding():
    weights = np.array([[0.2, 0.5, 0.3], [0.9, 0.05, 0.05]])
    loc = np.array([[-3.0, 0.0, 2.0], [100.0, -50.0, 1e3]])
    scale = np.array([[0.5, 1.0, 0.3], [1.0, 2.0, 10.0]])
    levels = np.array([0.001, 0.03, 0.5, 0.93, 0.999])

    values = metrics.quantile(normal_mixture(weights, loc, scale), levels[:, None])

    assert values.shape == (5, 2)
    for i in range(2):
        for j, level in enumerate(levels):
            expected = scipy.optimize.brentq(
                lambda x: mixture_cdf(x, weights[i], loc[i], scale[i]) - level, -1e4, 1e4, xtol=1e-13, rtol=1e-14
            )
            assert values[j, i] == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_heavy_tailed_mixture_quantile_brackets():
    # Components with 1.5 degrees of freedom have no variance, so the bracket starts at
    # unit width and must double many times to reach the 0.9999 quantile.
    mixture = dist.MixtureSameFamily(
        dist.Categorical(probs=jnp.array([[0.5, 0.5]])),
        dist.StudentT(jnp.array([[1.5, 1.5]]), jnp.array([[-1.0, 1.0]]), jnp.array([[1.0, 3.0]])),
    )
    for level in (0.0001, 0.3, 0.9999):
        value = metrics.quantile(mixture, level)[0]
        cdf = 0.5 * scipy.stats.t.cdf(value, 1.5, -1.0, 1.0) + 0.5 * scipy.stats.t.cdf(value, 1.5, 1.0, 3.0)
        assert cdf == pytest.approx(level, rel=1e-8)


def test_quantile_uses_icdf_when_available():
    loc, scale, df = np.array([0.0, 5.0]), np.array([1.0, 2.0]), np.array([3.0, 10.0])
    assert np.allclose(metrics.quantile(normal(loc, scale), 0.9), scipy.stats.norm.ppf(0.9, loc, scale), rtol=1e-12)
    assert np.allclose(
        metrics.quantile(student_t(df, loc, scale), 0.9), scipy.stats.t.ppf(0.9, df, loc, scale), rtol=1e-10
    )


def test_quantile_rejects_probabilities_outside_unit_interval():
    for q in (0.0, 1.0, 1.5, np.nan):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            metrics.quantile(normal([0.0], [1.0]), q)


# -- coverage and calibration -----------------------------------------------------------------


def test_interval_coverage_tiny_example():
    # Standard normal half-widths: 0.674 (50%), 1.645 (90%), 1.960 (95%). Shifted by the
    # location, the targets sit 0.1, 0.8, 1.7 and 2.5 from the centre.
    predictive = normal([0.0, 10.0, -5.0, 1.0], [1.0, 1.0, 1.0, 1.0])
    y = np.array([0.1, 9.2, -3.3, 3.5])

    coverage = metrics.interval_coverage(predictive, y)

    assert coverage == {0.5: 0.25, 0.9: 0.5, 0.95: 0.75}


def test_interval_coverage_agrees_with_quantiles():
    rng = np.random.default_rng(5)
    predictive = random_mixture(rng, 40, 4)
    y = rng.normal(0.0, 3.0, 40)
    levels = (0.3, 0.8)

    coverage = metrics.interval_coverage(predictive, y, levels)

    for level in levels:
        lower = metrics.quantile(predictive, (1.0 - level) / 2.0)
        upper = metrics.quantile(predictive, (1.0 + level) / 2.0)
        assert coverage[level] == np.mean((lower <= y) & (y <= upper))


def test_calibration_of_own_samples_near_diagonal():
    # Targets drawn from the predictive itself: each observed coverage lies within 4
    # binomial standard errors, sqrt(a (1 - a) / m), of its nominal level.
    rng = np.random.default_rng(6)
    m = 2000
    weights, loc, scale = rng.dirichlet(np.ones(5), size=m), rng.normal(0.0, 2.0, (m, 5)), rng.uniform(0.3, 1.5, (m, 5))
    predictive = normal_mixture(weights, loc, scale)
    y = draw_normal_mixture(rng, weights, loc, scale, 1)[0]

    nominal, observed = metrics.calibration_curve(predictive, y)

    assert np.allclose(nominal, np.linspace(0.05, 0.95, 19))
    assert np.all(np.abs(observed - nominal) < 4.0 * np.sqrt(nominal * (1.0 - nominal) / m))


def test_probability_integral_transform_uniform():
    rng = np.random.default_rng(7)
    loc, scale = rng.normal(size=1000), rng.uniform(0.5, 2.0, 1000)
    predictive = student_t(np.full(1000, 4.0), loc, scale)
    y = loc + scale * rng.standard_t(4.0, 1000)
    pit = metrics.probability_integral_transform(predictive, y)
    assert pit.shape == (1000,)
    # Kolmogorov-Smirnov test against the uniform distribution at the 0.1% level.
    assert scipy.stats.kstest(pit, "uniform").pvalue > 1e-3


def test_regression_metrics_keys_and_values():
    rng = np.random.default_rng(8)
    predictive = random_mixture(rng, 30, 3)
    y = rng.normal(size=30)

    result = metrics.regression_metrics(predictive, y)

    assert set(result) == {"nll", "rmse", "crps", "coverage_50", "coverage_90", "coverage_95"}
    assert all(isinstance(value, float) for value in result.values())
    assert result["nll"] == metrics.negative_log_likelihood(predictive, y)
    assert result["crps"] == metrics.crps(predictive, y)
    assert result["coverage_90"] == metrics.interval_coverage(predictive, y)[0.9]


# -- classification ---------------------------------------------------------------------------

CLASS_PROBS = np.array([[0.9, 0.1], [0.45, 0.55], [0.3, 0.7], [0.25, 0.75]])
CLASS_LABELS = np.array([0, 0, 1, 0])


def test_accuracy_and_nll_small_example():
    assert metrics.accuracy(CLASS_PROBS, CLASS_LABELS) == 0.5
    expected_nll = -np.mean(np.log([0.9, 0.45, 0.7, 0.25]))
    assert metrics.classification_nll(CLASS_PROBS, CLASS_LABELS) == pytest.approx(expected_nll, rel=1e-12)


def test_expected_calibration_error_small_example():
    # Five bins: 0.9 alone (correct), 0.55 alone (wrong), and 0.7 and 0.75 together (one right):
    # 1/4 |1 - 0.9| + 1/4 |0 - 0.55| + 2/4 |0.5 - 0.725| = 0.275.
    assert metrics.expected_calibration_error(CLASS_PROBS, CLASS_LABELS, num_bins=5) == pytest.approx(0.275)


def test_expected_calibration_error_zero_when_calibrated():
    # Confidence 0.75 in one bin, with three of four predictions right.
    probs = np.tile([0.75, 0.25], (4, 1))
    assert metrics.expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-15)


def test_classification_nll_clips_zero_probability():
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    expected = (-np.log(metrics.CLASSIFICATION_EPSILON) - np.log(0.5)) / 2.0
    assert metrics.classification_nll(probs, np.array([1, 0])) == pytest.approx(expected, rel=1e-12)


def test_classification_metrics_keys():
    result = metrics.classification_metrics(CLASS_PROBS, CLASS_LABELS)
    assert result == {
        "accuracy": metrics.accuracy(CLASS_PROBS, CLASS_LABELS),
        "nll": metrics.classification_nll(CLASS_PROBS, CLASS_LABELS),
        "ece": metrics.expected_calibration_error(CLASS_PROBS, CLASS_LABELS),
    }


# -- bad input --------------------------------------------------------------------------------


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"y has shape \(4,\) but the predictive has batch shape \(3,\)"):
        metrics.rmse(normal(np.zeros(3), np.ones(3)), np.zeros(4))


def test_predictive_batch_shape_must_be_one_dimensional():
    with pytest.raises(ValueError, match=r"batch shape \(2, 3\)"):
        metrics.crps(normal(np.zeros((2, 3)), np.ones((2, 3))), np.zeros(3))


def test_nan_targets_name_count_and_indices():
    y = np.array([0.0, np.nan, 1.0, np.nan])
    with pytest.raises(ValueError, match=r"2 NaN or infinite values \(first at indices \[1, 3\]\)"):
        metrics.negative_log_likelihood(normal(np.zeros(4), np.ones(4)), y)


def test_non_distribution_predictive_rejected():
    with pytest.raises(ValueError, match="numpyro Distribution"):
        metrics.rmse(np.zeros(3), np.zeros(3))


def test_probs_must_sum_to_one():
    probs = np.array([[0.5, 0.5], [0.6, 0.6]])
    with pytest.raises(ValueError, match=r"sum to 1 within 1e-06; 1 rows do not \(first \[1\]"):
        metrics.accuracy(probs, np.array([0, 1]))


def test_probs_must_be_non_negative():
    with pytest.raises(ValueError, match=r"non-negative; rows \[0\]"):
        metrics.classification_nll(np.array([[1.2, -0.2], [0.5, 0.5]]), np.array([0, 1]))


def test_labels_must_be_in_range():
    with pytest.raises(ValueError, match=r"0 to 1 for 2 classes; found \[2\] at indices \[1\]"):
        metrics.accuracy(CLASS_PROBS[:2], np.array([0, 2]))


def test_labels_must_be_integers():
    with pytest.raises(ValueError, match="integer class indices"):
        metrics.accuracy(CLASS_PROBS[:2], np.array([0.0, 0.5]))
