"""End-to-end tests of `probnn pfn train`, `evaluate` and `list` through the real entry point."""

import json

import pytest

from probnn.cli.main import main

TINY = ["--d-model", "16", "--layers", "1", "--heads", "2", "--d-ff", "16", "--buckets", "16",
        "--max-train-points", "8", "--batch-size", "8", "--warmup", "2", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pfn-cli")
    code = main(["pfn", "train", "--prior", "gp-rbf-1d", "--steps", "20", "--out", str(out), *TINY])
    assert code == 0
    return out


def test_pfn_train_writes_checkpoint(trained):
    record = json.loads((trained / "config.json").read_text())
    assert record["training"]["steps_done"] == 20


def test_pfn_train_records_hardware(trained):
    record = json.loads((trained / "config.json").read_text())
    assert "CPU cores" in record["training"]["hardware"]


# Compiles the exact GP, the PFN and the plot: about half a minute on two cores.
@pytest.mark.slow
def test_pfn_evaluate_writes_gap_and_plot(trained, tmp_path):
    out, plot = tmp_path / "eval.json", tmp_path / "plot.png"
    code = main(["pfn", "evaluate", "--checkpoint", str(trained), "--datasets", "20", "--out", str(out),
                 "--plot", str(plot)])
    assert code == 0
    record = json.loads(out.read_text())
    assert set(record["gap_to_exact"]) == {"pfn", "exact", "bar-floor"}
    assert plot.stat().st_size > 10_000


def test_pfn_train_resumes_finished_run(trained, capsys):
    code = main(["pfn", "train", "--prior", "gp-rbf-1d", "--steps", "20", "--out", str(trained), *TINY])
    assert code == 0
    assert "for 20 steps" in capsys.readouterr().out


def test_pfn_train_unknown_prior(tmp_path, capsys):
    code = main(["pfn", "train", "--prior", "gp", "--steps", "5", "--out", str(tmp_path)])
    assert code == 2
    assert "choose one of" in capsys.readouterr().err


def test_pfn_train_zero_steps(tmp_path, capsys):
    code = main(["pfn", "train", "--prior", "gp-rbf-1d", "--steps", "0", "--out", str(tmp_path)])
    assert code == 2
    assert "--steps must be at least 1" in capsys.readouterr().err


def test_pfn_evaluate_missing_checkpoint(tmp_path, capsys):
    code = main(["pfn", "evaluate", "--checkpoint", str(tmp_path / "none")])
    assert code == 2
    assert "neither a shipped PFN" in capsys.readouterr().err


@pytest.mark.slow
def test_pfn_train_fine_tunes_checkpoint(trained, tmp_path):
    code = main(["pfn", "train", "--prior", "gp-rbf-1d", "--steps", "2", "--out", str(tmp_path),
                 "--init-from", str(trained), "--no-progress"])
    assert code == 0
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["init"]["name"] == str(trained)
