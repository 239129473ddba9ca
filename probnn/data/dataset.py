"""The ``Dataset`` container, train/test splits and standardisation."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np
from jaxtyping import Float, Int

#: Tasks a dataset can have. Classification targets are class labels 0, 1, ... stored as floats.
TASKS = ("regression", "classification")

#: A standard deviation at or below this fraction of the absolute mean counts as zero in
#: :func:`standardize`, so that constant columns whose mean is not exactly representable
#: (a standard deviation of about 1e-17 instead of 0) are left unscaled too.
ZERO_STD_RELATIVE_TOLERANCE = 1e-12


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A regression or classification dataset with its standard train/test splits.

    The arrays are copied on construction and stored read-only, so a dataset cannot be
    changed after loading; :meth:`split` returns new, writable arrays.

    Parameters
    ----------
    name : str
        The bundled name, or the file or folder name the data was read from.
    X : array of shape (n, d)
        Features, stored as float64.
    y : array of shape (n,)
        Targets, stored as float64. For classification these are class labels 0, 1, ...
    feature_names : tuple of str
        One name per column of ``X``.
    target_name : str
        Name of the target column.
    splits : tuple of (train_idx, test_idx) pairs
        Row indices of the standard splits, or ``()`` when the source defines none
        (use :func:`random_split` then).
    task : {"regression", "classification"}
    """

    name: str
    X: Float[np.ndarray, "n d"]
    y: Float[np.ndarray, "n"]
    feature_names: tuple[str, ...]
    target_name: str
    splits: tuple[tuple[Int[np.ndarray, "n_train"], Int[np.ndarray, "n_test"]], ...] = ()
    task: Literal["regression", "classification"] = "regression"

    def __post_init__(self):
        X = np.array(self.X, dtype=np.float64)
        y = np.array(self.y, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"Dataset {self.name!r}: X must have shape (n, d), got shape {X.shape}.")
        if y.shape != (X.shape[0],):
            raise ValueError(
                f"Dataset {self.name!r}: y must have shape (n,) with n = {X.shape[0]} rows of X, "
                f"got shape {y.shape}."
            )
        feature_names = tuple(str(name) for name in self.feature_names)
        if len(feature_names) != X.shape[1]:
            raise ValueError(
                f"Dataset {self.name!r}: {len(feature_names)} feature names were given for "
                f"{X.shape[1]} columns of X; pass one name per column."
            )
        if self.task not in TASKS:
            raise ValueError(f"Dataset {self.name!r}: task must be one of {TASKS}, got {self.task!r}.")

        splits = tuple(_check_split(self.name, k, pair, X.shape[0]) for k, pair in enumerate(self.splits))
        object.__setattr__(self, "X", _read_only(X))
        object.__setattr__(self, "y", _read_only(y))
        object.__setattr__(self, "feature_names", feature_names)
        object.__setattr__(self, "target_name", str(self.target_name))
        object.__setattr__(self, "splits", splits)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, task={self.task!r}, rows={self.X.shape[0]}, "
            f"features={self.X.shape[1]}, target={self.target_name!r}, splits={self.num_splits})"
        )

    @property
    def num_splits(self) -> int:
        """Number of standard train/test splits (0 when the source defines none)."""
        return len(self.splits)

    def split(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(X_train, y_train, X_test, y_test)`` of standard split ``k``.

        Raises
        ------
        ValueError
            If ``k`` is not in ``0, ..., num_splits - 1``. A dataset without standard splits
            raises for every ``k``; use :func:`random_split` for it.
        """
        if self.num_splits == 0:
            raise ValueError(
                f"Dataset {self.name!r} has no standard splits; use "
                f"probnn.data.random_split(dataset, {k!r}) for a reproducible random split."
            )
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < self.num_splits:
            raise ValueError(
                f"Split index {k!r} is out of range: dataset {self.name!r} has {self.num_splits} "
                f"splits, numbered 0 to {self.num_splits - 1}."
            )
        train, test = self.splits[k]
        return self.X[train], self.y[train], self.X[test], self.y[test]


def _check_split(name: str, k: int, pair, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Return a split as two read-only int64 index arrays, or raise naming the problem."""
    if len(pair) != 2:
        raise ValueError(f"Dataset {name!r}: split {k} must be a (train_idx, test_idx) pair.")
    arrays = []
    for role, indices in zip(("train", "test"), pair):
        indices = np.asarray(indices)
        if indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(
                f"Dataset {name!r}: the {role} indices of split {k} must be a non-empty 1-d integer "
                f"array, got dtype {indices.dtype} and shape {indices.shape}."
            )
        outside = indices[(indices < 0) | (indices >= num_rows)]
        if outside.size:
            raise ValueError(
                f"Dataset {name!r}: the {role} indices of split {k} include {outside[:5].tolist()}, "
                f"outside the {num_rows} rows (valid indices are 0 to {num_rows - 1})."
            )
        arrays.append(_read_only(indices.astype(np.int64)))
    overlap = np.intersect1d(arrays[0], arrays[1])
    if overlap.size:
        raise ValueError(
            f"Dataset {name!r}: split {k} has {overlap.size} rows in both train and test "
            f"(first {overlap[:5].tolist()}); a test row must not be trained on."
        )
    return arrays[0], arrays[1]


def random_split_indices(num_rows: int, k: int, test_fraction: float = 0.1, seed: int = 0):
    """Return ``(train_idx, test_idx)`` of random split ``k`` of ``num_rows`` rows.

    The permutation comes from ``numpy.random.RandomState([seed, k])``, whose output NumPy
    guarantees to stay the same across versions, so a split depends only on
    ``(num_rows, k, test_fraction, seed)``. Both index arrays are sorted.
    """
    for label, value in (("k", k), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**32:
            raise ValueError(f"{label} must be an integer in [0, 2**32), got {value!r}.")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction!r}.")
    if num_rows < 2:
        raise ValueError(f"A random split needs at least 2 rows, got {num_rows}.")

    # At least one row on each side, so that neither set is empty for small datasets.
    num_test = min(max(round(test_fraction * num_rows), 1), num_rows - 1)
    permutation = np.random.RandomState([int(seed), int(k)]).permutation(num_rows)
    return np.sort(permutation[num_test:]), np.sort(permutation[:num_test])


def random_split(
    dataset: Dataset, k: int, test_fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(X_train, y_train, X_test, y_test)`` of a reproducible random split.

    Split ``k`` holds out ``round(test_fraction * n)`` rows (at least one, and at least one
    row is kept for training). Different ``k`` give independent splits, and the same
    ``(k, test_fraction, seed)`` always gives the same rows. The dataset's standard splits,
    if any, are ignored.

    Parameters
    ----------
    dataset : Dataset
    k : int
        Split number, any integer in ``[0, 2**32)``.
    test_fraction : float
        Fraction of rows held out for testing, strictly between 0 and 1.
    seed : int
        Seed in ``[0, 2**32)``, combined with ``k``.
    """
    train, test = random_split_indices(dataset.X.shape[0], k, test_fraction, seed)
    return dataset.X[train], dataset.y[train], dataset.X[test], dataset.y[test]


def standardize(
    train: Float[np.ndarray, "n_train *d"], test: Float[np.ndarray, "n_test *d"]
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Standardise training and test arrays by the training mean and standard deviation.

    Works column-wise on features of shape ``(n, d)`` and on targets of shape ``(n,)``.
    The standard deviation is the population one (``ddof=0``). A column whose standard
    deviation is zero (at most ``ZERO_STD_RELATIVE_TOLERANCE`` times its absolute mean) gets
    a standard deviation of 1, so it is only centred.

    Parameters
    ----------
    train : array of shape (n_train, d) or (n_train,)
        At least one row, all values finite.
    test : array of shape (n_test, d) or (n_test,)
        May have zero rows.

    Returns
    -------
    train_standardized, test_standardized : numpy.ndarray
        New float64 arrays; the inputs are not changed.
    (mean, std) : tuple of numpy.ndarray
        Of shape ``(d,)``, or ``()`` for 1-d inputs. Undo with ``z * std + mean``.

    Examples
    --------
    >>> X_train, y_train, X_test, y_test = dataset.split(0)
    >>> X_train, X_test, _ = standardize(X_train, X_test)
    >>> y_train, y_test, (y_mean, y_std) = standardize(y_train, y_test)
    """
    train = np.asarray(train, dtype=np.float64)
    test = np.asarray(test, dtype=np.float64)
    if train.ndim not in (1, 2) or train.shape[0] == 0:
        raise ValueError(
            f"train must have shape (n, d) or (n,) with at least one row, got shape {train.shape}."
        )
    if test.ndim != train.ndim or test.shape[1:] != train.shape[1:]:
        raise ValueError(
            f"test must have the columns of train: train has shape {train.shape}, test has shape "
            f"{test.shape}."
        )
    if not np.all(np.isfinite(train)):
        raise ValueError("train contains NaN or infinite values; remove or impute them before standardising.")

    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std <= ZERO_STD_RELATIVE_TOLERANCE * np.abs(mean), 1.0, std)
    return (train - mean) / std, (test - mean) / std, (mean, std)
