"""Loading bundled datasets, UCI split folders and CSV or whitespace-separated files.

Nothing here uses the network. The bundled datasets come from scikit-learn's installed
data files, except ``sine-outliers``, which is generated at load time from a fixed seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from probnn.data._tables import check_finite, default_column_name, detect_delimiter, read_table
from probnn.data.dataset import Dataset, random_split_indices

#: Suffixes read as tables. Files without a suffix are read like ``.data`` files.
TABLE_SUFFIXES = (".csv", ".txt", ".dat", ".data", ".tsv", "")

_SKLEARN_LOADERS = {
    "diabetes": ("load_diabetes", "regression"),
    "linnerud": ("load_linnerud", "regression"),
    "digits": ("load_digits", "classification"),
    "iris": ("load_iris", "classification"),
    "wine": ("load_wine", "classification"),
    "breast-cancer": ("load_breast_cancer", "classification"),
}

_DESCRIPTIONS = {
    "diabetes": "regression, 442 x 10: disease progression one year after baseline (scikit-learn)",
    "linnerud": "regression, 20 x 3: physiological measurements from exercise counts, targets "
    "Weight, Waist, Pulse (scikit-learn)",
    "digits": "classification, 1797 x 64: 8x8 images of handwritten digits, 10 classes (scikit-learn)",
    "iris": "classification, 150 x 4: iris flower measurements, 3 classes (scikit-learn)",
    "wine": "classification, 178 x 13: chemical analysis of wines, 3 classes (scikit-learn)",
    "breast-cancer": "classification, 569 x 30: Wisconsin breast cancer diagnosis, 2 classes (scikit-learn)",
    "sine-outliers": "regression, 200 x 1: sin(2x) + x/2 with Student-t noise and 8 outliers, "
    "10 random 90/10 splits (synthetic)",
}

#: Names users try for the Boston housing data, which scikit-learn removed in version 1.2.
_BOSTON_NAMES = frozenset({"boston", "bostonhousing", "boston-housing", "boston_housing"})

# sine-outliers: these constants define the dataset, so changing one changes every result on it.
SINE_OUTLIERS_SEED = 2022
SINE_OUTLIERS_SIZE = 200
SINE_OUTLIERS_NOISE_DF = 2.1
SINE_OUTLIERS_NOISE_SCALE = 0.1
SINE_OUTLIERS_NUM_OUTLIERS = 8
SINE_OUTLIERS_NUM_SPLITS = 10


def list_datasets() -> dict[str, str]:
    """Return the bundled dataset names, each with a one-line description.

    Any of these names can be passed to :func:`load_dataset`. Other data (for example
    the UCI regression sets) is loaded from a path.
    """
    return dict(_DESCRIPTIONS)


def load_dataset(name_or_path: str | os.PathLike, target: str | int | None = None) -> Dataset:
    """Load a bundled dataset by name, a UCI split folder, or a table file.

    Parameters
    ----------
    name_or_path : str or path-like
        One of three things:

        - A name from :func:`list_datasets`. Names win over files of the same name in the
          working folder; pass ``"./iris"`` to load such a file.
        - A folder in the UCI split layout of Bayesian deep-learning benchmarks:
          ``data.txt`` (whitespace-separated numbers), ``index_features.txt`` and
          ``index_target.txt`` (0-based column indices), and ``index_train_K.txt`` /
          ``index_test_K.txt`` (0-based row indices) for ``K = 0, 1, ...``, with an
          optional ``n_splits.txt``. The files may also sit in a ``data/`` subfolder.
        - A table file: ``.csv`` (comma-separated), or ``.txt``, ``.dat``, ``.data``,
          ``.tsv`` or no suffix (whitespace-separated, or comma-separated when the first
          line has a comma). The first line is a header when one of its fields is not a
          number. Every column other than the target is a feature.
    target : str or int, optional
        The target column. For a table file: a header name, or a 0-based column index as
        an int or a digit string; the default is the last column. For a UCI folder: a
        0-based column index of ``data.txt`` that replaces ``index_target.txt``. For
        ``linnerud``: ``"Weight"`` (default), ``"Waist"`` or ``"Pulse"``, or 0, 1, 2.

    Returns
    -------
    Dataset
        Regression datasets have ``task="regression"``; ``digits``, ``iris``, ``wine``
        and ``breast-cancer`` have ``task="classification"`` with labels 0, 1, ... in ``y``.

    Raises
    ------
    ValueError
        For an unknown name, a missing file or folder, a missing target column, non-numeric
        or missing values, fewer than 3 rows, or split indices that are out of range or
        overlap. The message names the file, line and column involved.
    """
    if isinstance(name_or_path, str):
        name = name_or_path.strip().lower().replace("_", "-")
        if name in _DESCRIPTIONS:
            return _load_bundled(name, target)
        if name in _BOSTON_NAMES:
            raise ValueError(
                "Boston housing is no longer bundled with scikit-learn (removed in version 1.2), and "
                "probnn does not download data. Pass the path of its UCI split folder instead, "
                "for example load_dataset('path/to/bostonHousing')."
            )
    elif not isinstance(name_or_path, os.PathLike):
        raise ValueError(
            f"name_or_path must be a dataset name or a path, got {type(name_or_path).__name__}."
        )

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _load_uci_folder(path, target)
    if path.is_file():
        return _load_table_file(path, target)
    if isinstance(name_or_path, str) and not _looks_like_path(name_or_path):
        raise ValueError(
            f"Unknown dataset name {name_or_path!r}, and no file or folder has that name. Bundled "
            f"names: {', '.join(_DESCRIPTIONS)}. Pass one of those, or the path of a CSV or "
            "whitespace-separated file, or of a UCI split folder."
        )
    raise ValueError(
        f"File or folder not found: {str(path)!r} (resolved to {str(path.absolute())!r}). Check the "
        "path, or pass a bundled name from probnn.data.list_datasets()."
    )


def _looks_like_path(text: str) -> bool:
    return any(separator in text for separator in ("/", "\\", os.sep)) or Path(text).suffix != ""


# -- bundled datasets ------------------------------------------------------------------


def _load_bundled(name: str, target) -> Dataset:
    if name == "sine-outliers":
        _select_bundled_target(name, ("y",), target)
        return _sine_outliers()

    import sklearn.datasets

    loader_name, task = _SKLEARN_LOADERS[name]
    options = {"scaled": False} if name == "diabetes" else {}
    bunch = getattr(sklearn.datasets, loader_name)(**options)
    if name == "linnerud":
        target_names = tuple(str(label) for label in bunch.target_names)
        column = _select_bundled_target(name, target_names, target)
        return Dataset(
            name, bunch.data, bunch.target[:, column], tuple(bunch.feature_names), target_names[column]
        )

    target_name = "disease_progression" if name == "diabetes" else "class"
    _select_bundled_target(name, (target_name,), target)
    return Dataset(name, bunch.data, bunch.target, tuple(bunch.feature_names), target_name, task=task)


def _select_bundled_target(name: str, target_names: tuple[str, ...], target) -> int:
    """Return the index in ``target_names`` chosen by ``target`` (a name or index; None is 0)."""
    if target is None:
        return 0
    index = _column_index(target, target_names)
    if index is None:
        raise ValueError(
            f"Dataset {name!r} has no target {target!r}; its targets are "
            f"{', '.join(repr(t) for t in target_names)} (or their indices 0 to {len(target_names) - 1})."
        )
    return index


def _sine_outliers() -> Dataset:
    """Generate the ``sine-outliers`` regression set.

    The inputs ``x`` are uniform on [-3, 3], sorted. The targets are
    ``y = sin(2x) + x / 2 + 0.1 t``, with ``t`` Student-t with 2.1 degrees of freedom.
    Then 8 random points are shifted up or down by 2 to 4. The numbers come from
    ``numpy.random.RandomState``, whose output NumPy guarantees to stay the same across
    versions (up to roundoff), so every installation gets the same data.
    """
    rng = np.random.RandomState(SINE_OUTLIERS_SEED)
    x = np.sort(rng.uniform(-3.0, 3.0, SINE_OUTLIERS_SIZE))
    noise = SINE_OUTLIERS_NOISE_SCALE * rng.standard_t(SINE_OUTLIERS_NOISE_DF, SINE_OUTLIERS_SIZE)
    y = np.sin(2.0 * x) + 0.5 * x + noise

    outliers = rng.choice(SINE_OUTLIERS_SIZE, SINE_OUTLIERS_NUM_OUTLIERS, replace=False)
    signs = rng.choice([-1.0, 1.0], SINE_OUTLIERS_NUM_OUTLIERS)
    y[outliers] += signs * rng.uniform(2.0, 4.0, SINE_OUTLIERS_NUM_OUTLIERS)

    # The same splits as random_split(dataset, k) with its defaults.
    splits = tuple(random_split_indices(SINE_OUTLIERS_SIZE, k) for k in range(SINE_OUTLIERS_NUM_SPLITS))
    return Dataset("sine-outliers", x[:, None], y, ("x",), "y", splits)


# -- table files -------------------------------------------------------------------------


def _column_index(target, names: tuple[str, ...]) -> int | None:
    """Return the column that ``target`` names (a name, an int or a digit string), or None."""
    if isinstance(target, bool):
        return None
    if isinstance(target, (int, np.integer)):
        return int(target) if 0 <= target < len(names) else None
    if not isinstance(target, str):
        return None
    if target in names:
        if names.count(target) > 1:
            raise ValueError(
                f"The target name {target!r} is the header of {names.count(target)} columns; pass "
                "the target's 0-based column index instead."
            )
        return names.index(target)
    if target.isdigit() and int(target) < len(names):
        return int(target)
    return None


def _load_table_file(path: Path, target) -> Dataset:
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise ValueError(
            f"Unsupported file type {path.suffix!r} for {path}. Pass a .csv file (comma-separated, "
            "with a header row) or a whitespace-separated .txt, .dat or .data file."
        )
    table = read_table(path, delimiter=detect_delimiter(path))
    if len(table.column_names) < 2:
        raise ValueError(
            f"{path} has one column; a dataset needs at least one feature column and a target column."
        )

    column = len(table.column_names) - 1 if target is None else _column_index(target, table.column_names)
    if column is None:
        raise ValueError(
            f"{path} has no target column {target!r}. Its columns are "
            f"{', '.join(repr(name) for name in table.column_names)}; pass one of those names or a "
            f"0-based index from 0 to {len(table.column_names) - 1}."
        )
    check_finite(str(path), table.values, table.line_numbers, table.column_names)

    features = [j for j in range(len(table.column_names)) if j != column]
    return Dataset(
        path.stem,
        table.values[:, features],
        table.values[:, column],
        tuple(table.column_names[j] for j in features),
        table.column_names[column],
    )


# -- UCI split folders -------------------------------------------------------------------


def _load_uci_folder(folder: Path, target) -> Dataset:
    files = _uci_files_folder(folder)
    table = read_table(files / "data.txt", delimiter=None, header=False)
    num_rows, num_columns = table.values.shape

    features = _read_indices(files / "index_features.txt", num_columns, "column", "data.txt")
    if target is None:
        targets = _read_indices(files / "index_target.txt", num_columns, "column", "data.txt")
        if targets.size != 1:
            raise ValueError(
                f"{files / 'index_target.txt'} lists {targets.size} columns {targets.tolist()}; it must "
                "list exactly one. Pass target=<column index> to choose one."
            )
        column = int(targets[0])
    else:
        column = _column_index(target, table.column_names)
        if column is None:
            raise ValueError(
                f"{files / 'data.txt'} has no target column {target!r}; pass a 0-based column index "
                f"from 0 to {num_columns - 1}."
            )
    # A target passed by the caller may be one of the listed feature columns.
    features = features[features != column]

    used_columns = [*features.tolist(), column]
    check_finite(
        str(files / "data.txt"),
        table.values[:, used_columns],
        table.line_numbers,
        tuple(table.column_names[j] for j in used_columns),
    )
    splits = _read_uci_splits(files, num_rows)
    # A folder passed as "yacht/data" is still the yacht dataset.
    name = folder.resolve().name
    if name == "data":
        name = folder.resolve().parent.name
    return Dataset(
        name,
        table.values[:, features],
        table.values[:, column],
        tuple(table.column_names[j] for j in features),
        table.column_names[column],
        splits,
    )


def _uci_files_folder(folder: Path) -> Path:
    """Return ``folder``, or its ``data/`` subfolder, whichever contains ``data.txt``."""
    for candidate in (folder, folder / "data"):
        if (candidate / "data.txt").is_file():
            return candidate
    raise ValueError(
        f"Folder {folder} has no data.txt, neither directly nor in a data/ subfolder. A UCI split "
        "folder needs data.txt, index_features.txt, index_target.txt and index_train_K.txt / "
        "index_test_K.txt for K = 0, 1, ...; pass a file path to read a single table instead."
    )


def _read_indices(path: Path, size: int, kind: str, target_file: str) -> np.ndarray:
    """Read whitespace-separated 0-based indices, each in ``[0, size)``, from ``path``."""
    if not path.is_file():
        raise ValueError(f"{path} is missing; the UCI split layout needs it next to data.txt.")
    indices = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        for field in line.split():
            # numpy.savetxt writes integers as floats by default ("1.2e+01"), so integral
            # floats are accepted.
            try:
                value = float(field)
            except ValueError:
                value = np.nan
            if not (np.isfinite(value) and value == int(value)):
                raise ValueError(f"{path}, line {number}: {field!r} is not an integer {kind} index.")
            if not 0 <= value < size:
                raise ValueError(
                    f"{path}, line {number}: {kind} index {int(value)} is outside {target_file}, which "
                    f"has {size} {kind}s (valid indices are 0 to {size - 1}). Check that the index "
                    "files belong to this data.txt."
                )
            indices.append(int(value))
    if not indices:
        raise ValueError(f"{path} is empty; it must list 0-based {kind} indices.")
    return np.array(indices, dtype=np.int64)


def _read_uci_splits(files: Path, num_rows: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Read ``index_train_K.txt`` and ``index_test_K.txt`` in the order K = 0, 1, ..."""
    count_file = files / "n_splits.txt"
    if count_file.is_file():
        text = count_file.read_text(encoding="utf-8-sig").strip()
        if not text.isdigit():
            raise ValueError(f"{count_file} must contain one non-negative integer, found {text!r}.")
        num_splits = int(text)
    else:
        num_splits = 0
        while (files / f"index_train_{num_splits}.txt").is_file():
            num_splits += 1

    splits = []
    for k in range(num_splits):
        train_file, test_file = files / f"index_train_{k}.txt", files / f"index_test_{k}.txt"
        reason = f"n_splits.txt lists {num_splits} splits" if count_file.is_file() else f"{train_file.name} exists"
        for path in (train_file, test_file):
            if not path.is_file():
                raise ValueError(f"{path} is missing, but {reason}. Restore the file, or correct n_splits.txt.")
        train = _read_indices(train_file, num_rows, "row", "data.txt")
        test = _read_indices(test_file, num_rows, "row", "data.txt")
        overlap = np.intersect1d(train, test)
        if overlap.size:
            raise ValueError(
                f"Split {k} in {files} has {overlap.size} rows in both {train_file.name} and "
                f"{test_file.name} (first: {overlap[:5].tolist()}). A test row must not be trained on; "
                "fix the index files."
            )
        splits.append((train, test))
    return tuple(splits)
