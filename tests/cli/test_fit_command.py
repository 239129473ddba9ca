"""End-to-end tests of `probnn fit`, `probnn models` and `probnn datasets` through the real entry point."""

import json

import numpy as np
import pytest

from probnn.cli.main import main

QUICK = ["--restarts", "1", "--max-iterations", "15", "--no-progress"]


def write_csv(path, n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, n)
    y = np.sin(2.0 * x) + 0.1 * rng.standard_normal(n)
    lines = ["x,noise,y"] + [f"{a:.6f},{b:.6f},{c:.6f}" for a, b, c in zip(x, rng.standard_normal(n), y)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_one_dimensional_csv(path, n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, n)
    y = np.sin(2.0 * x) + 0.1 * rng.standard_normal(n)
    path.write_text("x,y\n" + "\n".join(f"{a:.6f},{b:.6f}" for a, b in zip(x, y)) + "\n")
    return path


@pytest.mark.slow
def test_fit_writes_metrics_table_and_plots(tmp_path):
    data = write_one_dimensional_csv(tmp_path / "data.csv")
    out = tmp_path / "study"
    code = main(["fit", "--data", str(data), "--target", "y", "--model", "gp-rbf,smnngp-burr", "--splits", "2", "--out", str(out), *QUICK])
    assert code == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] is True
    assert metrics["splits"] == [0, 1]
    assert set(metrics["models"]) == {"gp-rbf", "smnngp-burr"}
    for entry in metrics["models"].values():
        for key in ("nll", "rmse", "crps", "coverage_50", "coverage_90", "coverage_95", "nll_standardized", "seconds"):
            assert np.isfinite(entry[key])
        assert 0.0 <= entry["coverage_95"] <= 1.0
        # A sine with noise 0.1 is easy: the RMSE must be far below the target spread (about 0.7).
        assert entry["rmse"] < 0.3

    table = (out / "table.md").read_text()
    assert "| gp-rbf | 2 |" in table
    assert "| smnngp-burr | 2 |" in table
    for name in ("calibration.png", "band.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "runs.jsonl").read_text().splitlines()) == 4


def test_rerun_skips_finished_runs(tmp_path):
    data = write_csv(tmp_path / "data.csv")
    out = tmp_path / "study"
    args = ["fit", "--data", str(data), "--model", "gp-rbf", "--splits", "1", "--out", str(out), *QUICK]
    assert main(args) == 0
    first = (out / "runs.jsonl").read_text()
    assert main(args) == 0
    assert (out / "runs.jsonl").read_text() == first
    assert not (out / "band.png").exists()  # two features: no band plot


def test_rerun_with_other_settings_is_rejected(tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv")
    out = tmp_path / "study"
    assert main(["fit", "--data", str(data), "--model", "gp-rbf", "--split", "0", "--out", str(out), *QUICK]) == 0
    code = main(["fit", "--data", str(data), "--model", "gp-rbf", "--split", "0", "--seed", "3", "--out", str(out), *QUICK])
    assert code == 2
    assert "other settings" in capsys.readouterr().err


def test_standardized_nll_is_a_change_of_variables(tmp_path):
    data = write_csv(tmp_path / "data.csv")
    out = tmp_path / "study"
    assert main(["fit", "--data", str(data), "--model", "gp-rbf", "--split", "0", "--out", str(out), *QUICK]) == 0
    record = json.loads((out / "runs.jsonl").read_text().splitlines()[0])
    from probnn.data import load_dataset, random_split

    _, y_train, _, _ = random_split(load_dataset(data), 0, seed=0)
    assert record["nll_standardized"] == pytest.approx(record["nll"] - np.log(np.std(y_train)), rel=1e-12)
    assert record["rmse_standardized"] == pytest.approx(record["rmse"] / np.std(y_train), rel=1e-12)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "gp-unknown"], "not a known model"),
        (["--target", "price"], "price"),
        (["--split", "7", "--splits", "2"], "not both"),
        (["--restarts", "0"], "--restarts"),
        (["--max-fit-points", "2"], "--max-fit-points"),
    ],
)
def test_bad_arguments_name_the_problem(tmp_path, capsys, extra, message):
    data = write_csv(tmp_path / "data.csv")
    code = main(["fit", "--data", str(data), "--out", str(tmp_path / "out"), *QUICK, *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_bad_files_name_the_row_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1.0,2.0\n2.0,oops\n3.0,4.0\n4.0,5.0\n")
    assert main(["fit", "--data", str(bad), "--out", str(tmp_path / "out"), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "oops" in err
    assert "y" in err

    tiny = tmp_path / "tiny.csv"
    tiny.write_text("x,y\n1.0,2.0\n2.0,3.0\n")
    assert main(["fit", "--data", str(tiny), "--out", str(tmp_path / "out2"), *QUICK]) == 2
    assert "3" in capsys.readouterr().err

    missing = tmp_path / "missing.csv"
    missing.write_text("x,y\n1.0,2.0\n2.0,\n3.0,4.0\n4.0,5.0\n")
    assert main(["fit", "--data", str(missing), "--out", str(tmp_path / "out3"), *QUICK]) == 2
    assert "3" in capsys.readouterr().err


def test_classification_data_is_rejected(tmp_path, capsys):
    assert main(["fit", "--data", "digits", "--out", str(tmp_path / "out"), *QUICK]) == 2
    assert "classification" in capsys.readouterr().err


def test_models_and_datasets_are_listed(capsys):
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    for name in ("gp-nngp", "tp-nngp", "smnngp-burr", "gp-rbf"):
        assert name in listing
    assert main(["datasets"]) == 0
    assert "sine-outliers" in capsys.readouterr().out
