"""Initial inducing inputs for the sparse processes: k-means, k-center or a random subset."""

from __future__ import annotations

import numpy as np

#: Ways to place the initial inducing inputs.
INDUCING_INITIALIZATIONS = ("kmeans", "kcenter", "random")


def check_inducing_init(method: str) -> str:
    """Return ``method`` if it is a known initialisation, else raise ``ValueError`` listing them."""
    if method not in INDUCING_INITIALIZATIONS:
        raise ValueError(f"inducing_init must be one of {INDUCING_INITIALIZATIONS}, got {method!r}.")
    return method


def initial_inducing_inputs(X: np.ndarray, num_inducing: int, method: str, seed: int) -> np.ndarray:
    """Choose ``num_inducing`` rows of inducing inputs for the training inputs ``X`` of shape (n, d).

    ``"kmeans"`` returns the centres of scikit-learn's k-means (one k-means++ start), which
    sit where the data are dense. ``"kcenter"`` picks training points greedily, each the
    one farthest from those already picked (Gonzalez's 2-approximation of the k-center
    problem), which covers the input space evenly, outliers included. ``"random"`` is a
    uniformly drawn subset of the rows.
    """
    check_inducing_init(method)
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if not 1 <= num_inducing <= n:
        raise ValueError(
            f"num_inducing={num_inducing} must lie between 1 and the number of training points ({n}); "
            "lower num_inducing or pass more data."
        )
    rng = np.random.default_rng(seed)
    if method == "random":
        return X[np.sort(rng.choice(n, num_inducing, replace=False))]
    if method == "kcenter":
        return X[_k_center(X, num_inducing, rng)]
    from sklearn.cluster import KMeans

    kmeans = KMeans(n_clusters=num_inducing, n_init=1, random_state=int(rng.integers(2**31 - 1))).fit(X)
    return np.asarray(kmeans.cluster_centers_, dtype=np.float64)


def _k_center(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` rows of ``X`` chosen by farthest-point traversal from a random first row."""
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(X.shape[0])
    distance = np.sum((X - X[chosen[0]]) ** 2, axis=1)
    for i in range(1, k):
        chosen[i] = int(np.argmax(distance))
        distance = np.minimum(distance, np.sum((X - X[chosen[i]]) ** 2, axis=1))
    return chosen
