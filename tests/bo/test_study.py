"""End-to-end tests of the surrogate study (`probnn study`, probnn.bo.study) with real `probnn bo` processes."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import matplotlib.image
import numpy as np
import pytest

from probnn.bo.problems import get_problem
from probnn.bo.study import count_evaluations, run_study
from probnn.bo.surrogates import SURROGATES
from probnn.cli.main import main

SURROGATE_NAMES = ("random", "gp-rbf")
SEEDS = 2
INITIAL = 3
ITERATIONS = 4
TOTAL = INITIAL + ITERATIONS
STUDY_ARGV = [
    "study", "--problems", "branin", "--surrogates", ",".join(SURROGATE_NAMES), "--seeds", str(SEEDS),
    "--initial", str(INITIAL), "--iterations", str(ITERATIONS), "--workers", "2",
]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Run a study of random search and a GP on Branin with two seeds. Tests must not modify its folder."""
    out = tmp_path_factory.mktemp("study") / "out"
    summary = run_study(
        ["branin"], list(SURROGATE_NAMES), seeds=SEEDS, iterations=ITERATIONS, initial=INITIAL,
        out=out, workers=2, progress=False,
    )
    return out, summary


def _run_dir(out, surrogate, seed):
    return out / "runs" / "branin" / surrogate / f"seed{seed}"


def _regret_from_csv(out, surrogate, seed):
    with open(_run_dir(out, surrogate, seed) / "evaluations.csv") as handle:
        rows = list(csv.DictReader(handle))
    best = min(float(row["y"]) for row in rows[:TOTAL])
    assert float(rows[TOTAL - 1]["best_so_far"]) == pytest.approx(best)
    return max(best - get_problem("branin").optimum, 0.0)


def _snapshot(folder):
    return {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.slow
def test_summary_matches_run_folders(study):
    out, summary = study
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True
    assert summary["failed"] == []
    entry = summary["problems"]["branin"]
    assert entry["optimum"] == pytest.approx(get_problem("branin").optimum)
    for surrogate in SURROGATE_NAMES:
        cell = entry["surrogates"][surrogate]
        expected = [_regret_from_csv(out, surrogate, seed) for seed in range(SEEDS)]
        assert cell["seeds"] == list(range(SEEDS))
        assert cell["final_regret"] == pytest.approx(expected, rel=1e-12)
        q25, median, q75 = np.percentile(expected, [25, 50, 75])
        assert cell["median_regret"] == pytest.approx(median, rel=1e-12)
        assert cell["q25_regret"] == pytest.approx(q25, rel=1e-12)
        assert cell["q75_regret"] == pytest.approx(q75, rel=1e-12)
        assert cell["finished_seeds"] == SEEDS
        timings = [
            json.loads((_run_dir(out, surrogate, seed) / "results.json").read_text())["median_seconds_per_iteration"]
            for seed in range(SEEDS)
        ]
        assert cell["median_seconds_per_iteration"] == pytest.approx(np.median(timings))


@pytest.mark.slow
def test_results_store_every_iteration_time(study):
    out, _ = study
    for surrogate in SURROGATE_NAMES:
        results = json.loads((_run_dir(out, surrogate, 0) / "results.json").read_text())
        assert len(results["iteration_seconds"]) == ITERATIONS
        assert results["median_seconds_per_iteration"] == pytest.approx(np.median(results["iteration_seconds"]), abs=1e-6)


@pytest.mark.slow
def test_table_rows_sorted_by_median_regret(study):
    out, _ = study
    table = (out / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| surrogate")]
    assert len(rows) == len(SURROGATE_NAMES)

    medians = {}
    for surrogate in SURROGATE_NAMES:
        regrets = [_regret_from_csv(out, surrogate, seed) for seed in range(SEEDS)]
        q25, medians[surrogate], q75 = np.percentile(regrets, [25, 50, 75])
        expected_cells = f"| {surrogate} | {medians[surrogate]:.3g} [{q25:.3g}, {q75:.3g}] |"
        assert any(row.startswith(expected_cells) for row in rows), (expected_cells, rows)
        assert any(row.startswith(f"| {surrogate} |") and row.endswith(f"| {SEEDS}/{SEEDS} |") for row in rows)
    order = [row.split("|")[1].strip() for row in rows]
    assert order == sorted(SURROGATE_NAMES, key=medians.get)


@pytest.mark.slow
def test_plot_is_valid_png(study):
    out, _ = study
    image = matplotlib.image.imread(out / "branin.png")
    assert image.ndim == 3
    assert image.shape[0] > 100
    assert image.shape[1] > 100
    # A blank canvas would be one colour.
    assert np.unique(image.reshape(-1, image.shape[2]), axis=0).shape[0] > 10


@pytest.mark.slow
def test_rerun_skips_finished_runs(study, capsys):
    out, _ = study
    before = _snapshot(out / "runs")
    assert main([*STUDY_ARGV, "--out", str(out), "--no-progress"]) == 0
    assert _snapshot(out / "runs") == before
    printed = capsys.readouterr().out
    assert "## branin" in printed
    assert "| gp-rbf |" in printed


@pytest.mark.slow
def test_summarize_rebuilds_outputs(study, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(study[0], copy)
    for name in ("summary.json", "table.md", "branin.png"):
        (copy / name).unlink()
    assert main(["study", "--summarize", str(copy)]) == 0
    assert json.loads((copy / "summary.json").read_text())["problems"] == study[1]["problems"]
    assert (copy / "table.md").read_text() == (study[0] / "table.md").read_text()
    assert (copy / "branin.png").is_file()
    assert "## branin" in capsys.readouterr().out


@pytest.mark.slow
def test_partial_run_resumed_to_completion(study, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(study[0], out)
    partial = _run_dir(out, "random", 1)
    journal = partial / "journal.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    kept_lines = 1 + INITIAL + 1  # the header, the design and one BO iteration
    journal.write_text("".join(lines[:kept_lines]))
    others = {
        (surrogate, seed): _snapshot(_run_dir(out, surrogate, seed))
        for surrogate in SURROGATE_NAMES for seed in range(SEEDS) if (surrogate, seed) != ("random", 1)
    }

    summary = run_study(["branin"], list(SURROGATE_NAMES), seeds=SEEDS, iterations=ITERATIONS, initial=INITIAL, out=out, progress=False)

    resumed = journal.read_text().splitlines(keepends=True)
    assert len(resumed) == 1 + TOTAL
    assert resumed[:kept_lines] == lines[:kept_lines]
    results = json.loads((partial / "results.json").read_text())
    assert results["evaluations"] == TOTAL
    assert results["complete"] is True
    assert len(results["iteration_seconds"]) == ITERATIONS
    assert "--resume" in (partial / "bo.log").read_text()
    for (surrogate, seed), snapshot in others.items():
        assert _snapshot(_run_dir(out, surrogate, seed)) == snapshot
    assert summary["complete"] is True
    assert summary["problems"]["branin"]["surrogates"]["random"]["final_regret"][1] == pytest.approx(
        _regret_from_csv(out, "random", 1), rel=1e-12
    )


@pytest.mark.parametrize(
    "option, value, choices",
    [
        ("--problems", "branin,nope", ["branin", "hartmann6", "svr-diabetes"]),
        ("--surrogates", "random,forest", list(SURROGATES)),
    ],
)
def test_unknown_names_rejected_before_running(option, value, choices, tmp_path, capsys):
    argv = ["study", "--problems", "branin", "--surrogates", "random", "--out", str(tmp_path / "out")]
    argv[argv.index(option) + 1] = value
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert value.split(",")[1] in error
    for name in choices:
        assert name in error
    assert not (tmp_path / "out").exists()


def test_summarize_conflicts_with_run_options(tmp_path, capsys):
    assert main(["study", "--summarize", str(tmp_path), "--seeds", "3"]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_failed_run_reported_and_others_finish(tmp_path, capsys):
    out = tmp_path / "out"
    broken = _run_dir(out, "random", 0)
    broken.mkdir(parents=True)
    header = {
        "kind": "header", "version": 1, "bounds": [[-5.0, 10.0], [0.0, 15.0]], "parameter_names": ["x1", "x2"],
        "surrogate": "random", "acquisition": "logei", "num_initial": 2, "seed": 0, "beta": 2.0,
        "metadata": {"problem": "branin", "iterations": 1},
    }
    # A line that is not JSON before a valid one makes `probnn bo --resume` exit with status 2.
    evaluation = {"kind": "evaluation", "index": 1, "x": [0.0, 0.0], "y": 55.6, "time": "2026-01-01T00:00:00+00:00"}
    (broken / "journal.jsonl").write_text(json.dumps(header) + "\n{not json\n" + json.dumps(evaluation) + "\n")

    argv = ["study", "--problems", "branin", "--surrogates", "random", "--seeds", "2", "--initial", "2",
            "--iterations", "1", "--out", str(out), "--no-progress"]
    assert main(argv) == 1

    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["failed"]) == 1
    failure = summary["failed"][0]
    assert failure["seed"] == 0
    assert failure["returncode"] == 2
    assert "invalid JSON" in failure["output_tail"]
    assert (broken / "failure.json").is_file()
    assert summary["problems"]["branin"]["surrogates"]["random"]["seeds"] == [1]
    assert "## Failed runs" in (out / "table.md").read_text()
    assert "failed" in capsys.readouterr().err


def test_sigterm_stops_runs_and_prints_resume_command(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "probnn.cli.main", "study", "--problems", "branin", "--surrogates", "random",
               "--seeds", "1", "--initial", "2", "--iterations", "100000", "--out", str(out), "--no-progress"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               env={**os.environ, "PROBNN_CACHE_DIR": ""})
    journal = _run_dir(out, "random", 0) / "journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and count_evaluations(journal) < 5:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 130
    assert "Continue with: probnn study --problems branin" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False
    assert summary["failed"] == []
    evaluations = count_evaluations(journal)
    assert summary["unfinished"][0]["evaluations"] == evaluations
    # The `probnn bo` process wrote its outputs on SIGTERM and has stopped appending.
    assert json.loads((journal.parent / "results.json").read_text())["evaluations"] == evaluations
    time.sleep(1.0)
    assert count_evaluations(journal) == evaluations
