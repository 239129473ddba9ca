"""Reading numeric tables from CSV and whitespace-separated text files.

Every error names the file, the line number in the file (1-based, counting the header
and blank lines) and the column, so that a user can find the value in an editor.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import numpy as np

#: Fields read as missing values rather than as non-numeric text (compared in lower case).
#: UCI files often mark missing values with "?".
MISSING_TOKENS = frozenset({"", "?", "na", "n/a", "nan", "null", "none"})

#: A table needs at least this many data rows to be split into train and test sets with
#: two or more training rows.
MIN_ROWS = 3

#: At most this many line numbers are listed in an error about missing values.
MAX_LISTED_LINES = 10


class Table(NamedTuple):
    """A numeric table read from a text file; missing values are NaN."""

    values: np.ndarray
    column_names: tuple[str, ...]
    line_numbers: np.ndarray
    has_header: bool


def default_column_name(index: int) -> str:
    """Name of column ``index`` (0-based) in a file without a header row."""
    return f"column_{index}"


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _read_rows(path: Path, delimiter: str | None) -> list[tuple[int, list[str]]]:
    """Return ``(line number, stripped fields)`` for each non-blank line of ``path``.

    ``delimiter=None`` splits on runs of whitespace; otherwise the csv module splits on
    ``delimiter`` and handles quoted fields.
    """
    # utf-8-sig drops the byte-order mark that spreadsheet programs put before the header.
    with open(path, encoding="utf-8-sig", newline="") as file:
        if delimiter is None:
            rows = [(number, line.split()) for number, line in enumerate(file, start=1)]
        else:
            reader = csv.reader(file, delimiter=delimiter)
            rows = [(reader.line_num, [field.strip() for field in row]) for row in reader]
    return [(number, fields) for number, fields in rows if fields and any(fields)]


def detect_delimiter(path: Path) -> str | None:
    """Return ``","`` for a ``.csv`` file or a file whose first non-blank line has a comma, else ``None``."""
    if path.suffix.lower() == ".csv":
        return ","
    with open(path, encoding="utf-8-sig") as file:
        for line in file:
            if line.strip():
                return "," if "," in line else None
    return None


def read_table(path: Path, *, delimiter: str | None, header: bool | None = None) -> Table:
    """Read a numeric table, or raise ``ValueError`` naming the line, column and text at fault.

    Parameters
    ----------
    path : Path
    delimiter : str or None
        Field separator; ``None`` for runs of whitespace.
    header : bool or None
        Whether the first non-blank line is a header. ``None`` detects it: the line is a
        header when one of its fields is neither a number nor a missing-value marker.
    """
    rows = _read_rows(path, delimiter)
    if not rows:
        raise ValueError(f"{path} is empty; it needs rows of numbers, one row per data point.")

    first_line, first_fields = rows[0]
    if header is None:
        header = any(
            field.lower() not in MISSING_TOKENS and not _is_number(field) for field in first_fields
        )
    num_columns = len(first_fields)
    if header:
        names = tuple(field or default_column_name(j) for j, field in enumerate(first_fields))
        rows = rows[1:]
    else:
        names = tuple(default_column_name(j) for j in range(num_columns))

    for number, fields in rows:
        if len(fields) != num_columns:
            reference = "the header" if header else f"line {first_line}"
            raise ValueError(
                f"{path}, line {number}: found {len(fields)} values, but {reference} has "
                f"{num_columns} columns. Every row needs one value per column."
            )
    if len(rows) < MIN_ROWS:
        raise ValueError(
            f"{path} has {len(rows)} data rows; a dataset needs at least {MIN_ROWS} (two to "
            "train on and one to test on)."
        )

    line_numbers = np.array([number for number, _ in rows])
    return Table(_parse_values(path, rows, names), names, line_numbers, header)


def _parse_values(path: Path, rows: list[tuple[int, list[str]]], names: tuple[str, ...]) -> np.ndarray:
    """Convert the fields to float64, with NaN for missing values."""
    fields = [row for _, row in rows]
    try:
        # numpy converts numeric strings in C, but its error does not say where the bad field is.
        return np.array(fields, dtype=np.float64)
    except ValueError:
        pass

    values = np.empty((len(rows), len(names)))
    for i, (number, row) in enumerate(rows):
        for j, field in enumerate(row):
            if field.lower() in MISSING_TOKENS:
                values[i, j] = np.nan
                continue
            try:
                values[i, j] = float(field)
            except ValueError:
                raise ValueError(
                    f"{path}, line {number}, column {names[j]!r}: {field!r} is not a number. "
                    "Every value must be numeric; encode categories as numbers or drop that column."
                ) from None
    return values


def check_finite(source: str, values: np.ndarray, line_numbers: np.ndarray, names: tuple[str, ...]) -> None:
    """Raise ``ValueError`` listing the lines (at most ten) that have NaN, infinite or missing values."""
    bad_cells = ~np.isfinite(values)
    bad_rows = np.flatnonzero(bad_cells.any(axis=1))
    if bad_rows.size == 0:
        return
    lines = ", ".join(str(line) for line in line_numbers[bad_rows[:MAX_LISTED_LINES]])
    if bad_rows.size > MAX_LISTED_LINES:
        lines += f" and {bad_rows.size - MAX_LISTED_LINES} more"
    columns = ", ".join(repr(names[j]) for j in np.flatnonzero(bad_cells.any(axis=0)))
    raise ValueError(
        f"{source} has missing, NaN or infinite values in {bad_rows.size} rows, on lines {lines} "
        f"(columns {columns}). Remove those rows or impute the values, for example with "
        "sklearn.impute.SimpleImputer, and save the file again."
    )
