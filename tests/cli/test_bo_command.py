"""End-to-end tests of `probnn bo` and `probnn problems` through the real entry point."""

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from probnn.cli.main import main


def test_bo_writes_all_outputs(tmp_path):
    out = tmp_path / "run"
    code = main(["bo", "--problem", "branin", "--surrogate", "gp-rbf", "--iterations", "3", "--initial", "4", "--seed", "1", "--out", str(out), "--no-progress"])
    assert code == 0

    results = json.loads((out / "results.json").read_text())
    for key in ("problem", "surrogate", "seed", "evaluations", "best_value", "best_x", "optimum", "simple_regret", "seconds"):
        assert key in results
    assert results["problem"] == "branin"
    assert results["evaluations"] == 7
    assert results["simple_regret"] == pytest.approx(results["best_value"] - results["optimum"])
    assert set(results["best_x"]) == {"x1", "x2"}

    with open(out / "evaluations.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7
    assert float(rows[-1]["best_so_far"]) == pytest.approx(results["best_value"])
    assert len((out / "journal.jsonl").read_text().splitlines()) == 8
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_continues_to_new_total(tmp_path):
    out = tmp_path / "run"
    assert main(["bo", "--problem", "hartmann3", "--surrogate", "random", "--iterations", "2", "--initial", "3", "--out", str(out), "--no-progress"]) == 0
    assert main(["bo", "--resume", str(out), "--iterations", "5", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["evaluations"] == 8
    assert results["optimum"] == pytest.approx(-3.86278, abs=1e-4)


def test_unknown_optimum_gives_null_regret(tmp_path):
    out = tmp_path / "run"
    assert main(["bo", "--problem", "svr-diabetes", "--surrogate", "random", "--iterations", "1", "--initial", "2", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["optimum"] is None
    assert results["simple_regret"] is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bo", "--problem", "nope"], "nope"),
        (["bo", "--surrogate", "forest", "--problem", "branin"], "forest"),
        (["bo", "--iterations", "-1", "--problem", "branin"], "--iterations"),
        (["bo", "--resume", "missing-folder"], "No journal"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_resume_rejects_changed_settings(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["bo", "--problem", "branin", "--surrogate", "random", "--iterations", "1", "--initial", "2", "--out", str(out), "--no-progress"]) == 0
    assert main(["bo", "--resume", str(out), "--surrogate", "gp-rbf"]) == 2
    assert "--surrogate" in capsys.readouterr().err


def test_existing_run_folder_rejected(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["bo", "--problem", "branin", "--surrogate", "random", "--iterations", "1", "--initial", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err


def test_problems_lists_names(capsys):
    assert main(["problems"]) == 0
    text = capsys.readouterr().out
    assert "branin" in text
    assert "hartmann6" in text
    assert "svr-diabetes" in text


def test_console_script_installed():
    executable = shutil.which("probnn") or str(Path(sys.executable).with_name("probnn"))
    completed = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0
    assert "bo" in completed.stdout


def test_out_is_file_rejected(tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("x")
    assert main(["bo", "--problem", "branin", "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_sigterm_writes_outputs_and_resume_hint(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "probnn.cli.main", "bo", "--problem", "branin", "--surrogate", "random",
               "--iterations", "100000", "--initial", "2", "--out", str(out), "--no-progress"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "PROBNN_CACHE_DIR": ""})
    journal = out / "journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) > 5:
            break
        time.sleep(0.2)
    process.terminate()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "--resume" in stderr
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is False
    assert results["evaluations"] == len(journal.read_text().splitlines()) - 1
