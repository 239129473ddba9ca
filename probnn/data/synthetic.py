"""Synthetic regression data with heavy-tailed noise, for checks where the tails matter."""

from __future__ import annotations

import numpy as np


def contaminated_sine(seed: int, num_train: int = 50, num_test: int = 500, *, noise_scale: float = 0.1, df: float = 2.1, outlier_fraction: float = 0.06):
    """Draw ``y = sin(3x) + noise_scale * t_df`` on ``x ~ U(-1, 1)``, with gross outliers.

    A share ``outlier_fraction`` of the training and of the test points (at least one of
    each) is shifted up or down by an amount uniform on [3, 6], so training and test data
    come from the same contaminated distribution.

    Returns
    -------
    X_train, y_train, X_test, y_test : numpy.ndarray
        Inputs of shape ``(n, 1)`` and targets of shape ``(n,)``.
    """
    if num_train < 3 or num_test < 1:
        raise ValueError(f"num_train must be >= 3 and num_test >= 1, got {num_train} and {num_test}.")
    if not 0.0 <= outlier_fraction < 0.5:
        raise ValueError(f"outlier_fraction must lie in [0, 0.5), got {outlier_fraction}.")
    rng = np.random.default_rng(seed)

    def draw(n):
        X = rng.uniform(-1.0, 1.0, (n, 1))
        y = np.sin(3.0 * X[:, 0]) + noise_scale * rng.standard_t(df, n)
        count = max(1, int(round(outlier_fraction * n))) if outlier_fraction > 0 else 0
        index = rng.choice(n, count, replace=False)
        y[index] += rng.choice([-1.0, 1.0], count) * rng.uniform(3.0, 6.0, count)
        return X, y

    X_train, y_train = draw(num_train)
    X_test, y_test = draw(num_test)
    return X_train, y_train, X_test, y_test
