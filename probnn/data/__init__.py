"""Datasets for regression and classification benchmarks, with splits and standardisation.

:func:`load_dataset` reads a bundled dataset by name (see :func:`list_datasets`), a folder
in the UCI split layout used by Bayesian deep-learning benchmarks, or a CSV or
whitespace-separated file. Nothing is downloaded.

>>> from probnn.data import load_dataset, standardize
>>> dataset = load_dataset("sine-outliers")
>>> X_train, y_train, X_test, y_test = dataset.split(0)
>>> X_train, X_test, _ = standardize(X_train, X_test)
"""

from probnn.data.dataset import Dataset, random_split, standardize
from probnn.data.loaders import list_datasets, load_dataset

__all__ = ["Dataset", "list_datasets", "load_dataset", "random_split", "standardize"]
