"""End-to-end tests of `probnn np train`, `evaluate` and `list` through the real entry point."""

import json

import pytest

from probnn.cli.main import main

TINY = ["--hidden", "16", "--batch-size", "8", "--warmup", "2", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("np-cli")
    code = main(["np", "train", "--model", "cnp", "--task", "rbf", "--steps", "10", "--out", str(out), *TINY])
    assert code == 0
    return out


@pytest.mark.slow
def test_np_train_writes_checkpoint(trained):
    record = json.loads((trained / "config.json").read_text())
    assert record["training"]["steps_done"] == 10


@pytest.mark.slow
def test_np_train_records_task(trained):
    record = json.loads((trained / "config.json").read_text())
    assert record["task_name"] == "rbf"


@pytest.mark.slow
def test_np_evaluate_writes_log_likelihoods(trained, tmp_path):
    out = tmp_path / "eval.json"
    code = main(["np", "evaluate", "--checkpoint", str(trained), "--tasks", "20", "--out", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["num_tasks"] == 20


def test_np_train_unknown_model(tmp_path, capsys):
    code = main(["np", "train", "--model", "anp", "--task", "rbf", "--steps", "5", "--out", str(tmp_path)])
    assert code == 2
    assert "choose one of cnp, canp, mpnp" in capsys.readouterr().err


def test_np_train_unknown_task(tmp_path, capsys):
    code = main(["np", "train", "--model", "cnp", "--task", "gp", "--steps", "5", "--out", str(tmp_path)])
    assert code == 2
    assert "rbf" in capsys.readouterr().err


def test_np_list_names_shipped_checkpoints(capsys):
    assert main(["np", "list"]) == 0
    output = capsys.readouterr().out
    for name in ("cnp-rbf", "canp-rbf", "mpnp-rbf"):
        assert name in output


@pytest.mark.slow
def test_np_compare_writes_table_and_plot(trained, tmp_path):
    out = tmp_path / "compare"
    code = main([
        "np", "compare", "--checkpoints", f"A={trained},B={trained}", "--tasks", "rbf,lotka-volterra",
        "--num-tasks", "20", "--reference", "A", "--out", str(out), "--no-progress",
    ])
    assert code == 0
    result = json.loads((out / "compare.json").read_text())
    assert result["differences"]["rbf"]["B"]["target_ll"] == 0.0
    assert "| lotka-volterra | B |" in (out / "table.md").read_text()
    # Only the GP families have an exact posterior to plot against.
    assert sorted(p.name for p in out.glob("*.png")) == ["predictions_rbf.png"]


def test_np_compare_rejects_repeated_label(tmp_path, capsys):
    code = main(["np", "compare", "--checkpoints", "a/cnp,b/cnp", "--out", str(tmp_path)])
    assert code == 2
    assert "names the label 'cnp' twice" in capsys.readouterr().err
