"""Loading bundled datasets, UCI split folders and table files, and their input errors."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from probnn.data import Dataset, list_datasets, load_dataset, random_split, standardize

# The UCI folders sit beside the checkout in development, and at /work/shared where CI
# clones the repository elsewhere on the same machine.
_UCI_CANDIDATES = [Path(__file__).resolve().parents[3] / "shared" / "data" / "uci", Path("/work/shared/data/uci")]
YACHT = next((folder / "yacht" for folder in _UCI_CANDIDATES if (folder / "yacht").exists()), _UCI_CANDIDATES[0] / "yacht")

# name: (rows, features, task, standard splits)
BUNDLED = {
    "diabetes": (442, 10, "regression", 0),
    "linnerud": (20, 3, "regression", 0),
    "digits": (1797, 64, "classification", 0),
    "iris": (150, 4, "classification", 0),
    "wine": (178, 13, "classification", 0),
    "breast-cancer": (569, 30, "classification", 0),
    "sine-outliers": (200, 1, "regression", 10),
}


def write_lines(path: Path, lines) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def write_uci_folder(folder: Path, num_splits: int = 11, with_count_file: bool = True) -> np.ndarray:
    """Write a 12-row UCI split folder (columns 0-2 features, 3 target); return its data.

    Split k tests on rows k and k + 1 (mod 12) and trains on the rest, so every split is
    distinct and a load in the wrong order is detected.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data = np.arange(48, dtype=float).reshape(12, 4) / 4.0
    # Tabs and a trailing blank line, as some UCI benchmark folders have.
    write_lines(folder / "data.txt", ["\t".join(f"{v:g}" for v in row) for row in data] + [""])
    write_lines(folder / "index_features.txt", ["0", "1", "2"])
    write_lines(folder / "index_target.txt", ["3"])
    for k in range(num_splits):
        test = sorted({k % 12, (k + 1) % 12})
        train = [i for i in range(12) if i not in test]
        write_lines(folder / f"index_train_{k}.txt", [str(i) for i in train])
        write_lines(folder / f"index_test_{k}.txt", [str(i) for i in test])
    if with_count_file:
        write_lines(folder / "n_splits.txt", [str(num_splits)])
    return data


# -- bundled datasets ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_dataset_shapes(name):
    rows, features, task, num_splits = BUNDLED[name]
    dataset = load_dataset(name)
    assert dataset.name == name
    assert dataset.X.shape == (rows, features)
    assert dataset.y.shape == (rows,)
    assert dataset.X.dtype == np.float64
    assert dataset.y.dtype == np.float64
    assert len(dataset.feature_names) == features
    assert dataset.task == task
    assert dataset.num_splits == num_splits
    assert np.all(np.isfinite(dataset.X))


def test_list_datasets_names_every_bundled_set():
    descriptions = list_datasets()
    assert set(descriptions) == set(BUNDLED)
    for description in descriptions.values():
        assert description
        assert "\n" not in description


def test_classification_labels_are_class_indices():
    dataset = load_dataset("iris")
    assert set(np.unique(dataset.y)) == {0.0, 1.0, 2.0}


def test_linnerud_target_by_name_or_index():
    default = load_dataset("linnerud")
    pulse = load_dataset("linnerud", target="Pulse")
    assert default.target_name == "Weight"
    assert pulse.target_name == "Pulse"
    assert np.array_equal(load_dataset("linnerud", target=2).y, pulse.y)
    assert np.array_equal(load_dataset("linnerud", target="2").y, pulse.y)
    assert not np.array_equal(default.y, pulse.y)


def test_bundled_unknown_target_lists_targets():
    with pytest.raises(ValueError, match=r"no target 'Height'; its targets are 'Weight', 'Waist', 'Pulse'"):
        load_dataset("linnerud", target="Height")


def test_sine_outliers_is_deterministic():
    first, second = load_dataset("sine-outliers"), load_dataset("sine-outliers")
    assert np.array_equal(first.X, second.X)
    assert np.array_equal(first.y, second.y)
    for (train_a, test_a), (train_b, test_b) in zip(first.splits, second.splits):
        assert np.array_equal(train_a, train_b)
        assert np.array_equal(test_a, test_b)


def test_sine_outliers_follows_its_generating_function():
    dataset = load_dataset("sine-outliers")
    x = dataset.X[:, 0]
    residual = np.abs(dataset.y - (np.sin(2.0 * x) + 0.5 * x))
    assert x.min() >= -3.0
    assert x.max() <= 3.0
    # Student-t noise at scale 0.1 has a median absolute value of about 0.08; the outliers
    # are shifted by 2 to 4, and noise of the opposite sign can pull one below 2.
    assert np.median(residual) < 0.15
    assert np.sum(residual > 1.0) >= 7


def test_sine_outliers_splits_are_random_splits():
    dataset = load_dataset("sine-outliers")
    for k in range(dataset.num_splits):
        X_train, y_train, X_test, y_test = dataset.split(k)
        assert X_train.shape == (180, 1)
        assert X_test.shape == (20, 1)
        train, test = dataset.splits[k]
        assert np.intersect1d(train, test).size == 0
        expected = random_split(dataset, k)
        assert np.array_equal(X_test, expected[2])
        assert np.array_equal(y_train, expected[1])


# -- Dataset, splits and standardisation -------------------------------------------------------


def test_dataset_is_immutable():
    dataset = load_dataset("iris")
    with pytest.raises(dataclasses.FrozenInstanceError):
        dataset.X = np.zeros((1, 1))
    with pytest.raises(ValueError, match="read-only"):
        dataset.X[0, 0] = 1.0


def test_split_index_out_of_range_names_count():
    dataset = load_dataset("sine-outliers")
    with pytest.raises(ValueError, match="has 10 splits, numbered 0 to 9"):
        dataset.split(10)
    with pytest.raises(ValueError, match="has 10 splits"):
        dataset.split(-1)


def test_split_without_standard_splits_points_to_random_split():
    with pytest.raises(ValueError, match=r"no standard splits; use probnn\.data\.random_split"):
        load_dataset("diabetes").split(0)


def test_random_split_is_reproducible():
    dataset = load_dataset("diabetes")
    first = random_split(dataset, 3)
    again = random_split(dataset, 3)
    other = random_split(dataset, 4)
    assert first[0].shape == (398, 10)
    assert first[2].shape == (44, 10)
    for a, b in zip(first, again):
        assert np.array_equal(a, b)
    assert not np.array_equal(first[3], other[3])


def test_random_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="strictly between 0 and 1, got 1.5"):
        random_split(load_dataset("iris"), 0, test_fraction=1.5)


def test_standardize_uses_training_statistics():
    train = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    test = np.array([[7.0, 6.0]])

    train_std, test_std, (mean, std) = standardize(train, test)

    assert np.allclose(mean, [3.0, 5.0])
    # The second column is constant, so its standard deviation is replaced by 1.
    assert np.allclose(std, [np.sqrt(8.0 / 3.0), 1.0])
    assert np.allclose(train_std[:, 0], np.array([-2.0, 0.0, 2.0]) / np.sqrt(8.0 / 3.0))
    assert np.allclose(train_std[:, 1], 0.0)
    assert np.allclose(test_std, [[4.0 / np.sqrt(8.0 / 3.0), 1.0]])
    assert train[0, 0] == 1.0


def test_standardize_targets_and_inverse():
    y_train, y_test = np.array([2.0, 4.0, 9.0]), np.array([1.0, 10.0])
    z_train, z_test, (mean, std) = standardize(y_train, y_test)
    assert z_train.mean() == pytest.approx(0.0, abs=1e-15)
    assert z_train.std() == pytest.approx(1.0)
    assert np.allclose(z_test * std + mean, y_test)


def test_standardize_rejects_mismatched_columns():
    with pytest.raises(ValueError, match=r"train has shape \(3, 2\), test has shape \(1, 3\)"):
        standardize(np.zeros((3, 2)), np.zeros((1, 3)))


# -- UCI split folders ------------------------------------------------------------------------


def test_uci_folder_loads_splits_in_order(tmp_path):
    data = write_uci_folder(tmp_path / "toy")

    dataset = load_dataset(tmp_path / "toy")

    assert dataset.name == "toy"
    assert np.array_equal(dataset.X, data[:, :3])
    assert np.array_equal(dataset.y, data[:, 3])
    assert dataset.feature_names == ("column_0", "column_1", "column_2")
    assert dataset.target_name == "column_3"
    assert dataset.num_splits == 11
    # Split 10 tests on rows 10 and 11; a lexical file order would put it third.
    X_train, y_train, X_test, y_test = dataset.split(10)
    assert np.array_equal(y_test, data[[10, 11], 3])
    assert X_train.shape == (10, 3)
    assert np.array_equal(dataset.splits[2][1], [2, 3])


def test_uci_folder_in_data_subfolder(tmp_path):
    write_uci_folder(tmp_path / "toy" / "data", num_splits=2)
    dataset = load_dataset(str(tmp_path / "toy"))
    assert dataset.name == "toy"
    assert dataset.num_splits == 2


def test_uci_folder_without_count_file(tmp_path):
    write_uci_folder(tmp_path / "toy", num_splits=3, with_count_file=False)
    assert load_dataset(tmp_path / "toy").num_splits == 3


def test_uci_folder_target_override(tmp_path):
    data = write_uci_folder(tmp_path / "toy", num_splits=1)
    dataset = load_dataset(tmp_path / "toy", target=2)
    assert np.array_equal(dataset.y, data[:, 2])
    assert dataset.feature_names == ("column_0", "column_1")


def test_uci_index_outside_data_names_file(tmp_path):
    write_uci_folder(tmp_path / "toy", num_splits=2)
    write_lines(tmp_path / "toy" / "index_test_1.txt", ["3", "12"])
    with pytest.raises(ValueError, match=r"index_test_1\.txt, line 2: row index 12 is outside data\.txt, which has 12 rows"):
        load_dataset(tmp_path / "toy")


def test_uci_feature_index_outside_columns(tmp_path):
    write_uci_folder(tmp_path / "toy", num_splits=1)
    write_lines(tmp_path / "toy" / "index_features.txt", ["0", "7"])
    with pytest.raises(ValueError, match=r"column index 7 is outside data\.txt, which has 4 columns"):
        load_dataset(tmp_path / "toy")


def test_uci_overlapping_split_names_rows(tmp_path):
    write_uci_folder(tmp_path / "toy", num_splits=2)
    write_lines(tmp_path / "toy" / "index_train_1.txt", [str(i) for i in range(12)])
    with pytest.raises(ValueError, match=r"Split 1 .* has 2 rows in both index_train_1\.txt and index_test_1\.txt \(first: \[1, 2\]\)"):
        load_dataset(tmp_path / "toy")


def test_uci_missing_split_file(tmp_path):
    write_uci_folder(tmp_path / "toy", num_splits=3)
    (tmp_path / "toy" / "index_test_2.txt").unlink()
    with pytest.raises(ValueError, match=r"index_test_2\.txt is missing, but n_splits\.txt lists 3 splits"):
        load_dataset(tmp_path / "toy")


def test_folder_without_data_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"has no data\.txt, neither directly nor in a data/ subfolder"):
        load_dataset(tmp_path / "empty")


@pytest.mark.skipif(not YACHT.exists(), reason="the UCI yacht folder is not present next to this checkout")
def test_real_yacht_folder():
    dataset = load_dataset(YACHT)
    assert dataset.name == "yacht"
    assert dataset.X.shape == (308, 6)
    assert dataset.num_splits == 20
    X_train, y_train, X_test, y_test = dataset.split(0)
    assert X_train.shape == (277, 6)
    assert X_test.shape == (31, 6)
    assert np.array_equal(dataset.X[0], [-2.3, 0.568, 4.78, 3.99, 3.17, 0.125])
    assert dataset.y[0] == 0.11


# -- table files -------------------------------------------------------------------------------


def test_csv_with_header_and_named_target(tmp_path):
    path = write_lines(tmp_path / "toy.csv", ["a,b,c", "1,10,100", "2,20,200", "3,30,300", "4,40,400"])

    dataset = load_dataset(path, target="b")

    assert dataset.name == "toy"
    assert dataset.feature_names == ("a", "c")
    assert dataset.target_name == "b"
    assert np.array_equal(dataset.X, [[1, 100], [2, 200], [3, 300], [4, 400]])
    assert np.array_equal(dataset.y, [10, 20, 30, 40])
    assert dataset.num_splits == 0


def test_csv_default_target_is_last_column(tmp_path):
    path = write_lines(tmp_path / "toy.csv", ['"x 1",x2,y', "1,2,3", "4,5,6", "7,8,9"])
    dataset = load_dataset(path)
    assert dataset.target_name == "y"
    assert dataset.feature_names == ("x 1", "x2")
    assert np.array_equal(dataset.y, [3, 6, 9])
    assert np.array_equal(load_dataset(path, target="0").y, [1, 4, 7])


def test_whitespace_file_without_header_integer_target(tmp_path):
    path = write_lines(tmp_path / "toy.txt", ["1 2.5  3", "", "4\t5e-1 6", "7 8 -9"])

    dataset = load_dataset(path, target=0)

    assert dataset.target_name == "column_0"
    assert dataset.feature_names == ("column_1", "column_2")
    assert np.array_equal(dataset.y, [1, 4, 7])
    assert np.array_equal(dataset.X, [[2.5, 3], [0.5, 6], [8, -9]])


def test_whitespace_file_with_header(tmp_path):
    path = write_lines(tmp_path / "toy.dat", ["speed load power", "1 2 3", "4 5 6", "7 8 9"])
    dataset = load_dataset(path, target="load")
    assert dataset.feature_names == ("speed", "power")
    assert np.array_equal(dataset.y, [2, 5, 8])


def test_comma_separated_data_file(tmp_path):
    path = write_lines(tmp_path / "toy.data", ["1,2,3", "4,5,6", "7,8,9"])
    dataset = load_dataset(path)
    assert dataset.target_name == "column_2"
    assert np.array_equal(dataset.X, [[1, 2], [4, 5], [7, 8]])


# -- input errors -------------------------------------------------------------------------------


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ValueError, match=r"File or folder not found: .*nothing\.csv"):
        load_dataset(str(tmp_path / "nothing.csv"))


def test_unknown_name_lists_bundled_names():
    with pytest.raises(ValueError, match=r"Unknown dataset name 'irs'.*Bundled names: .*iris.*sine-outliers"):
        load_dataset("irs")


def test_boston_points_to_uci_folder():
    with pytest.raises(ValueError, match=r"no longer bundled with scikit-learn.*UCI split folder"):
        load_dataset("boston")


def test_missing_target_column_lists_columns(tmp_path):
    path = write_lines(tmp_path / "toy.csv", ["a,b,c", "1,2,3", "4,5,6", "7,8,9"])
    with pytest.raises(ValueError, match=r"no target column 'd'\. Its columns are 'a', 'b', 'c'"):
        load_dataset(path, target="d")
    with pytest.raises(ValueError, match=r"no target column 3\. .*from 0 to 2"):
        load_dataset(path, target=3)


def test_non_numeric_value_names_line_and_column(tmp_path):
    path = write_lines(tmp_path / "toy.csv", ["a,b,c", "1,2,3", "4,five,6", "7,8,9"])
    with pytest.raises(ValueError, match=r"toy\.csv, line 3, column 'b': 'five' is not a number"):
        load_dataset(path)


def test_non_numeric_value_without_header(tmp_path):
    path = write_lines(tmp_path / "toy.txt", ["1 2 3", "4 5 6", "7 8 x9"])
    with pytest.raises(ValueError, match=r"line 3, column 'column_2': 'x9' is not a number"):
        load_dataset(path)


def test_missing_values_name_rows(tmp_path):
    path = write_lines(tmp_path / "toy.csv", ["a,b,c", "1,2,3", "4,,6", "7,8,9", "nan,1,2", "3,?,4"])
    with pytest.raises(ValueError, match=r"in 3 rows, on lines 3, 5, 6 \(columns 'a', 'b'\)\. Remove those rows or impute"):
        load_dataset(path)


def test_missing_values_list_at_most_ten_rows(tmp_path):
    rows = ["1 2"] * 3 + ["NaN 2"] * 12
    path = write_lines(tmp_path / "toy.txt", rows)
    with pytest.raises(ValueError, match=r"on lines 4, 5, 6, 7, 8, 9, 10, 11, 12, 13 and 2 more"):
        load_dataset(path)


def test_too_few_rows(tmp_path):
    path = write_lines(tmp_path / "toy.csv", ["a,b", "1,2", "3,4"])
    with pytest.raises(ValueError, match="has 2 data rows; a dataset needs at least 3"):
        load_dataset(path)


def test_ragged_row_names_line(tmp_path):
    path = write_lines(tmp_path / "toy.csv", ["a,b,c", "1,2,3", "4,5", "7,8,9"])
    with pytest.raises(ValueError, match=r"line 3: found 2 values, but the header has 3 columns"):
        load_dataset(path)


def test_unsupported_suffix(tmp_path):
    path = write_lines(tmp_path / "toy.xlsx", ["1 2", "3 4", "5 6"])
    with pytest.raises(ValueError, match=r"Unsupported file type '\.xlsx'"):
        load_dataset(path)


def test_dataset_rejects_overlapping_splits():
    with pytest.raises(ValueError, match=r"split 0 has 1 rows in both train and test \(first \[2\]\)"):
        Dataset("toy", np.zeros((4, 1)), np.zeros(4), ("x",), "y", ((np.array([0, 1, 2]), np.array([2, 3])),))
