"""Surrogate study: a grid of Bayesian optimization runs over problems, surrogates and seeds.

Every (problem, surrogate, seed) run is a ``probnn bo`` output folder under
``OUT/runs/PROBLEM/SURROGATE/seedK/``, made by its own ``python -m probnn.cli.main bo``
process, so runs share no JAX state and ``workers`` of them run in parallel. The run
journals are the record of truth: a run whose journal contains every requested evaluation
(and whose results.json matches it) is skipped, and any other run is continued with
``probnn bo --resume``. :func:`summarize_study` turns the folders into ``summary.json``,
``table.md`` and one ``PROBLEM.png`` per problem.

Examples
--------
>>> from probnn.bo.study import run_study
>>> summary = run_study(["branin"], ["gp-rbf", "random"], seeds=2, iterations=5, initial=4,
...                     out="runs/study", progress=False)  # doctest: +SKIP
>>> summary["problems"]["branin"]["surrogates"]["gp-rbf"]["median_regret"]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np

from probnn.cli.bo_command import JOURNAL_NAME

logger = logging.getLogger(__name__)

STUDY_NAME = "study.json"
SUMMARY_NAME = "summary.json"
TABLE_NAME = "table.md"
RUNS_FOLDER = "runs"
#: Standard output and error of every ``probnn bo`` process of a run, appended per attempt.
LOG_NAME = "bo.log"
#: Exit status and output tail of a run's last failed attempt. It is removed when the run is retried.
FAILURE_NAME = "failure.json"

#: Seconds between two updates of the progress bar from the journals of running runs.
POLL_SECONDS = 0.5
#: Seconds a terminated ``probnn bo`` process gets to write its outputs before it is killed.
TERMINATE_TIMEOUT_SECONDS = 60.0
#: Lines of a failed run's output kept in failure.json and the summary.
OUTPUT_TAIL_LINES = 20
#: Lower limit of the plotted regret, because a log axis cannot show zero.
REGRET_FLOOR = 1e-12


@dataclasses.dataclass(frozen=True)
class StudySettings:
    """Validated settings of a study, with problem and surrogate names in canonical form."""

    problems: tuple[str, ...]
    surrogates: tuple[str, ...]
    seeds: int
    iterations: int
    initial: int
    acquisition: str

    @property
    def total(self) -> int:
        """Evaluations of one finished run: the Sobol design plus the BO iterations."""
        return self.initial + self.iterations

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "problems": list(self.problems), "surrogates": list(self.surrogates)}


@dataclasses.dataclass(frozen=True)
class StudyRun:
    """One (problem, surrogate, seed) cell of the grid and its output folder."""

    problem: str
    surrogate: str
    seed: int
    folder: Path

    @property
    def label(self) -> str:
        return f"{self.problem}/{self.surrogate}/seed{self.seed}"


# -- settings and the grid -----------------------------------------------------------------


def _split_names(names, option: str) -> list[str]:
    if isinstance(names, str):
        names = names.split(",")
    names = [name.strip() for name in names if name.strip()]
    if not names:
        raise ValueError(f"{option} is empty; pass at least one name.")
    return names


def _unique(names: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _check_count(option: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_settings(problems, surrogates, seeds, iterations, initial, acquisition="logei") -> StudySettings:
    """Validate the settings of a study and return them with canonical names.

    Problem names go through :func:`probnn.bo.problems.get_problem`, so ``"Ackley10"``
    becomes ``"ackley10"``. Surrogate names are checked against
    ``probnn.bo.surrogates.SURROGATES`` as it is when this runs. Duplicates are dropped.

    Raises
    ------
    ValueError
        For an unknown problem, surrogate or acquisition (the message lists the choices),
        an empty name list, or a count out of range.
    """
    from probnn.bo.loop import ACQUISITION_NAMES
    from probnn.bo.problems import get_problem
    from probnn.bo.surrogates import SURROGATES

    problem_names = _unique([get_problem(name).name for name in _split_names(problems, "problems")])
    surrogate_names = _unique([name.lower() for name in _split_names(surrogates, "surrogates")])
    unknown = [name for name in surrogate_names if name not in SURROGATES]
    if unknown:
        noun = "surrogate" if len(unknown) == 1 else "surrogates"
        raise ValueError(f"Unknown {noun} {', '.join(map(repr, unknown))}; choose from {', '.join(SURROGATES)}.")
    if acquisition.lower() not in ACQUISITION_NAMES:
        raise ValueError(f"Unknown acquisition {acquisition!r}; choose from {', '.join(ACQUISITION_NAMES)}.")
    return StudySettings(
        problems=problem_names,
        surrogates=surrogate_names,
        seeds=_check_count("seeds", seeds, 1),
        iterations=_check_count("iterations", iterations, 0),
        initial=_check_count("initial", initial, 1),
        acquisition=acquisition.lower(),
    )


def run_folder(out, problem: str, surrogate: str, seed: int) -> Path:
    """Return the ``probnn bo`` output folder of one run of the study in ``out``."""
    return Path(out) / RUNS_FOLDER / problem / surrogate / f"seed{seed}"


def plan_runs(settings: StudySettings, out) -> list[StudyRun]:
    """List the runs of the grid, seed by seed.

    Seed 0 of every problem and surrogate comes first, so a study stopped early still
    compares every surrogate on the same seeds.
    """
    return [
        StudyRun(problem, surrogate, seed, run_folder(out, problem, surrogate, seed))
        for seed in range(settings.seeds)
        for problem in settings.problems
        for surrogate in settings.surrogates
    ]


def _read_header(journal: Path) -> dict:
    with open(journal) as handle:
        first_line = handle.readline()
    try:
        header = json.loads(first_line)
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("kind") != "header":
        raise ValueError(f"{journal} does not start with a probnn journal header; move that folder away and rerun.")
    return header


def _check_existing_run(run: StudyRun, settings: StudySettings) -> None:
    """Raise ``ValueError`` when the journal in ``run.folder`` was made with other settings."""
    journal = run.folder / JOURNAL_NAME
    if not journal.is_file() or journal.stat().st_size == 0:
        return
    header = _read_header(journal)
    recorded = {
        "problem": header.get("metadata", {}).get("problem"),
        "surrogate": header.get("surrogate"),
        "acquisition": header.get("acquisition"),
        "initial": header.get("num_initial"),
        "seed": header.get("seed"),
    }
    expected = {
        "problem": run.problem,
        "surrogate": run.surrogate,
        "acquisition": settings.acquisition,
        "initial": settings.initial,
        "seed": run.seed,
    }
    different = [f"{key} {recorded[key]!r} (expected {expected[key]!r})" for key in expected if recorded[key] != expected[key]]
    if different:
        raise ValueError(
            f"{journal} was recorded with {', '.join(different)}. Rerun with the settings of that "
            "study, or pass another output folder."
        )


def count_evaluations(journal: Path) -> int:
    """Return the number of complete evaluation lines in a journal, 0 when it is missing."""
    try:
        data = journal.read_bytes()
    except FileNotFoundError:
        return 0
    # Every complete line ends in a newline, and the first line is the header.
    return max(data.count(b"\n") - 1, 0)


def _read_results(folder: Path) -> dict | None:
    try:
        results = json.loads((folder / "results.json").read_text())
    except (OSError, ValueError):
        return None
    return results if isinstance(results, dict) else None


def is_finished(folder: Path, total: int) -> bool:
    """Return whether the run in ``folder`` has ``total`` evaluations and up-to-date outputs.

    The journal must hold at least ``total`` evaluations and results.json must count as
    many evaluations as the journal, so evaluations.csv and the timings cover all of them.
    """
    evaluations = count_evaluations(folder / JOURNAL_NAME)
    if evaluations < total:
        return False
    results = _read_results(folder)
    return results is not None and results.get("evaluations") == evaluations


# -- running --------------------------------------------------------------------------------


@dataclasses.dataclass
class _Outcome:
    run: StudyRun
    status: str  # "finished", "failed", "interrupted" or "not started"
    seconds: float = 0.0


class _Runner:
    """Launch ``probnn bo`` processes from worker threads, and terminate them all on request."""

    def __init__(self, settings: StudySettings):
        self.settings = settings
        self._lock = threading.Lock()
        self._processes: dict[StudyRun, subprocess.Popen] = {}
        self._stopping = False

    def command(self, run: StudyRun) -> list[str]:
        prefix = [sys.executable, "-m", "probnn.cli.main", "bo"]
        iterations = ["--iterations", str(self.settings.iterations), "--no-progress"]
        if (run.folder / JOURNAL_NAME).is_file():
            return [*prefix, "--resume", str(run.folder), *iterations]
        return [
            *prefix, "--problem", run.problem, "--surrogate", run.surrogate,
            "--acquisition", self.settings.acquisition, "--seed", str(run.seed),
            "--initial", str(self.settings.initial), "--out", str(run.folder), *iterations,
        ]

    def active_runs(self) -> list[StudyRun]:
        with self._lock:
            return list(self._processes)

    def run(self, run: StudyRun) -> _Outcome:
        start = time.perf_counter()
        with self._lock:
            # Checked under the lock, so no process starts after stop() has collected them.
            if self._stopping:
                return _Outcome(run, "not started")
            run.folder.mkdir(parents=True, exist_ok=True)
            (run.folder / FAILURE_NAME).unlink(missing_ok=True)
            journal = run.folder / JOURNAL_NAME
            if journal.is_file() and journal.stat().st_size == 0:
                # A process killed before it wrote the header leaves an empty journal,
                # which `probnn bo` neither resumes nor overwrites.
                journal.unlink()
            command = self.command(run)
            log = open(run.folder / LOG_NAME, "ab")
            log.write(f"$ {shlex.join(command)}\n".encode())
            log.flush()
            offset = log.tell()
            try:
                # A session of its own keeps a terminal's Ctrl-C from reaching the process
                # directly, so it is stopped once, by stop(), and not by two signals at once.
                process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            except OSError as error:
                log.close()
                return self._fail(run, command, None, f"probnn bo could not start: {error}", "")
            self._processes[run] = process
        logger.debug("Started %s: %s", run.label, shlex.join(command))
        try:
            returncode = process.wait()
        finally:
            log.close()
            with self._lock:
                del self._processes[run]
        seconds = time.perf_counter() - start

        if self._stopping and returncode != 0:
            return _Outcome(run, "interrupted", seconds)
        if returncode == 0 and is_finished(run.folder, self.settings.total):
            return _Outcome(run, "finished", seconds)
        if returncode == 0:
            reason = (
                f"probnn bo exited with status 0, but {run.folder} does not contain "
                f"{self.settings.total} evaluations with matching results.json"
            )
        else:
            reason = f"probnn bo exited with status {returncode}"
        return self._fail(run, command, returncode, reason, _read_tail(run.folder / LOG_NAME, offset), seconds)

    def _fail(self, run: StudyRun, command, returncode, reason: str, tail: str, seconds: float = 0.0) -> _Outcome:
        failure = {"returncode": returncode, "reason": reason, "command": shlex.join(command), "output_tail": tail}
        (run.folder / FAILURE_NAME).write_text(json.dumps(failure, indent=2) + "\n")
        logger.warning("%s failed: %s. Last output:\n%s", run.label, reason, tail)
        return _Outcome(run, "failed", seconds)

    def stop(self, timeout: float = TERMINATE_TIMEOUT_SECONDS) -> None:
        """Start no more processes, send SIGTERM to the running ones, and kill those that outlive ``timeout``."""
        with self._lock:
            self._stopping = True
            processes = dict(self._processes)
        for process in processes.values():
            process.terminate()
        deadline = time.monotonic() + timeout
        try:
            for run, process in processes.items():
                try:
                    process.wait(max(deadline - time.monotonic(), 0.0))
                except subprocess.TimeoutExpired:
                    logger.warning("%s did not stop within %.0f s of SIGTERM; killing it.", run.label, timeout)
                    process.kill()
        except KeyboardInterrupt:
            # A second Ctrl-C requests a fast exit. The journals are synced line by line,
            # so killing loses at most the outputs that the processes were writing.
            logger.warning("Second interrupt; killing %d running processes.", len(processes))
            for process in processes.values():
                process.kill()


def _read_tail(path: Path, offset: int, lines: int = OUTPUT_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Raise ``KeyboardInterrupt`` in the main thread on SIGTERM while the block runs.

    Wrap :func:`run_study` in this in a command-line program, so that ``kill`` and batch
    schedulers stop the ``probnn bo`` processes too, which run in sessions of their own.
    """

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_study(
    problems: Sequence[str] | str,
    surrogates: Sequence[str] | str,
    seeds: int,
    iterations: int,
    initial: int,
    out,
    acquisition: str = "logei",
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Run every (problem, surrogate, seed) Bayesian optimization run that is not finished yet.

    Each run is a ``probnn bo --no-progress`` process writing to
    ``out/runs/PROBLEM/SURROGATE/seedK/`` for seeds ``0 .. seeds - 1``, with an initial
    Sobol design of ``initial`` points followed by ``iterations`` BO steps. Up to
    ``workers`` processes run at a time. A finished run is skipped, and a run with a
    journal but fewer evaluations is continued with ``probnn bo --resume``. A run that
    exits with a nonzero status is recorded in its ``failure.json`` with the tail of its
    output, and the other runs go on.

    Parameters
    ----------
    problems, surrogates : sequence of str, or a comma-separated str
        Names from :func:`probnn.bo.problems.list_problems` and ``probnn.bo.SURROGATES``.
    seeds : int
        Number of seeds per problem and surrogate.
    iterations, initial : int
        BO iterations after the design, and size of the design.
    out : path
        Study folder; ``study.json`` in it records the settings for :func:`summarize_study`.
    acquisition : str
        Acquisition function of every run, as in ``probnn bo --acquisition``.
    workers : int
        Number of runs at a time.
    progress : bool
        Show a rich progress bar over the evaluations of all runs; otherwise log one line per run.

    Returns
    -------
    dict
        The summary written by :func:`summarize_study`.

    Raises
    ------
    ValueError
        Before any run starts: for invalid settings, or for a run folder whose journal
        was recorded with other settings.
    KeyboardInterrupt
        On Ctrl-C (or SIGTERM inside :func:`sigterm_as_interrupt`), after the running
        processes are terminated and the summary of the finished runs is written.
        Rerunning the same call continues the study.
    """
    settings = check_settings(problems, surrogates, seeds, iterations, initial, acquisition)
    workers = _check_count("workers", workers, 1)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"Study folder {out} is a file, not a folder; pass a folder path.")
    runs = plan_runs(settings, out)
    for run in runs:
        _check_existing_run(run, settings)

    out.mkdir(parents=True, exist_ok=True)
    (out / STUDY_NAME).write_text(json.dumps({"settings": settings.to_json()}, indent=2) + "\n")
    todo = [run for run in runs if not is_finished(run.folder, settings.total)]
    logger.info(
        "Study in %s: %d runs, %d already finished, %d to run with %d workers.",
        out, len(runs), len(runs) - len(todo), len(todo), workers,
    )

    runner = _Runner(settings)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probnn-study")
    try:
        _drive(runner, pool, runs, todo, settings, progress)
    except KeyboardInterrupt:
        logger.warning("Interrupted; stopping %d running processes.", len(runner.active_runs()))
        runner.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        summarize_study(out)
        raise
    except BaseException:
        runner.stop()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return summarize_study(out)


def _drive(runner: _Runner, pool: ThreadPoolExecutor, runs, todo, settings: StudySettings, show_progress: bool) -> None:
    """Submit the runs in ``todo`` and update the progress bar until all have ended."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    total = settings.total
    done = {run: min(count_evaluations(run.folder / JOURNAL_NAME), total) for run in runs}
    counts = {"finished": len(runs) - len(todo), "failed": 0}

    def describe() -> str:
        return (
            f"runs: {counts['finished']}/{len(runs)} finished, {counts['failed']} failed, "
            f"{len(runner.active_runs())} running"
        )

    columns = [
        TextColumn("[bold]study"), BarColumn(), MofNCompleteColumn(), TextColumn("evaluations"),
        TextColumn("{task.fields[runs]}"), TimeElapsedColumn(),
    ]
    with Progress(*columns, disable=not show_progress, transient=False) as progress:
        task = progress.add_task("study", total=len(runs) * total, completed=sum(done.values()), runs=describe())
        pending: set[Future] = {pool.submit(runner.run, run) for run in todo}
        while pending:
            ended, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in ended:
                outcome = future.result()
                done[outcome.run] = min(count_evaluations(outcome.run.folder / JOURNAL_NAME), total)
                if outcome.status in counts:
                    counts[outcome.status] += 1
                if not show_progress:
                    logger.info("%s %s after %.1f s (%s).", outcome.run.label, outcome.status, outcome.seconds, describe())
            for run in runner.active_runs():
                done[run] = min(count_evaluations(run.folder / JOURNAL_NAME), total)
            progress.update(task, completed=sum(done.values()), runs=describe())


# -- summary --------------------------------------------------------------------------------


def _read_journal_values(journal: Path) -> list[float] | None:
    """Return the objective values of a journal in order, NaN for failed evaluations.

    Reads without modifying the file, unlike :meth:`probnn.bo.journal.Journal.open`: a
    last line cut off by a crash is ignored. Returns None for an unreadable journal.
    """
    try:
        text = journal.read_text()
    except OSError:
        return None
    values = []
    for line in text.split("\n")[1:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("kind") == "evaluation":
            values.append(np.nan if record.get("y") is None else float(record["y"]))
    return values


def best_so_far(values, total: int) -> np.ndarray:
    """Return the running minimum of the first ``total`` values, NaN before the first finite one."""
    values = np.asarray(values, dtype=float)[:total]
    best = np.fmin.accumulate(np.where(np.isfinite(values), values, np.inf)) if values.size else values
    return np.where(np.isfinite(best), best, np.nan)


def read_study_settings(out) -> StudySettings:
    """Read the settings of the study in ``out`` from its study.json."""
    path = Path(out) / STUDY_NAME
    try:
        record = json.loads(path.read_text())["settings"]
        return StudySettings(**{**record, "problems": tuple(record["problems"]), "surrogates": tuple(record["surrogates"])})
    except FileNotFoundError:
        raise ValueError(f"No {STUDY_NAME} in {out}; start the study with `probnn study ... --out {out}`.") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a valid study settings file ({error}).") from None


def _collect_runs(out: Path, settings: StudySettings) -> list[dict]:
    """Read every run of the grid: its best-so-far curve when finished, its failure when failed."""
    records = []
    for run in plan_runs(settings, out):
        values = _read_journal_values(run.folder / JOURNAL_NAME) or []
        results = _read_results(run.folder) or {}
        record = {
            "problem": run.problem,
            "surrogate": run.surrogate,
            "seed": run.seed,
            "folder": str(run.folder),
            "evaluations": len(values),
            "finished": len(values) >= settings.total,
            "median_seconds_per_iteration": results.get("median_seconds_per_iteration"),
            "best_so_far": best_so_far(values, settings.total),
        }
        failure_path = run.folder / FAILURE_NAME
        if failure_path.is_file():
            try:
                record["failure"] = json.loads(failure_path.read_text())
            except ValueError:
                record["failure"] = {"reason": f"{failure_path} is not valid JSON"}
        records.append(record)
    return records


def _reference_value(problem: str, records: list[dict]) -> tuple[float | None, bool]:
    """Return the value regrets are measured from, and whether it is the known optimum.

    A problem with an unknown optimum (the scikit-learn tuning problems) is measured from
    the best value that any run of the study found on it.
    """
    from probnn.bo.problems import get_problem

    optimum = get_problem(problem).optimum
    if optimum is not None:
        return float(optimum), True
    best = [np.nanmin(r["best_so_far"]) for r in records if np.any(np.isfinite(r["best_so_far"]))]
    return (float(min(best)), False) if best else (None, False)


def _median_and_quartiles(values: list[float]) -> dict:
    finite = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if finite.size == 0:
        return {"median_regret": None, "q25_regret": None, "q75_regret": None}
    q25, median, q75 = np.percentile(finite, [25, 50, 75])
    return {"median_regret": float(median), "q25_regret": float(q25), "q75_regret": float(q75)}


def _summarize_surrogate(records: list[dict], reference: float | None) -> dict:
    finished = [r for r in records if r["finished"]]
    regrets = []
    for record in finished:
        final = record["best_so_far"][-1]
        regrets.append(None if reference is None or not np.isfinite(final) else max(float(final - reference), 0.0))
    timings = [r["median_seconds_per_iteration"] for r in finished if r["median_seconds_per_iteration"] is not None]
    return {
        "seeds": [r["seed"] for r in finished],
        "final_regret": regrets,
        **_median_and_quartiles(regrets),
        "median_seconds_per_iteration": float(np.median(timings)) if timings else None,
        "finished_seeds": len(finished),
    }


def summarize_study(out) -> dict:
    """Write summary.json, table.md and one PROBLEM.png per problem for the study in ``out``.

    Only finished runs enter the statistics and plots, and a run longer than the study's
    budget is cut to its first ``initial + iterations`` evaluations. The simple regret of a
    run is its best value minus the problem's known optimum, clipped at 0. For a problem
    with an unknown optimum, the best value found by any run of the study takes its place.

    Returns
    -------
    dict
        The contents of summary.json, with the keys ``settings``, ``problems``, ``failed``,
        ``unfinished`` and ``complete``. ``problems`` maps each problem to its ``optimum``,
        ``optimum_known`` and ``surrogates``. ``surrogates`` maps each surrogate to ``seeds``,
        ``final_regret`` (one per finished seed, in the order of ``seeds``), ``median_regret``,
        ``q25_regret``, ``q75_regret``, ``median_seconds_per_iteration`` and ``finished_seeds``.
    """
    out = Path(out)
    settings = read_study_settings(out)
    records = _collect_runs(out, settings)

    problems = {}
    for problem in settings.problems:
        chosen = [r for r in records if r["problem"] == problem]
        reference, known = _reference_value(problem, chosen)
        problems[problem] = {
            "optimum": reference,
            "optimum_known": known,
            "surrogates": {
                surrogate: _summarize_surrogate([r for r in chosen if r["surrogate"] == surrogate], reference)
                for surrogate in settings.surrogates
            },
        }

    failed = [
        {key: r[key] for key in ("problem", "surrogate", "seed", "folder", "evaluations")} | {
            "returncode": r["failure"].get("returncode"),
            "reason": r["failure"].get("reason"),
            "output_tail": r["failure"].get("output_tail", ""),
        }
        for r in records if "failure" in r and not r["finished"]
    ]
    unfinished = [
        {key: r[key] for key in ("problem", "surrogate", "seed", "folder", "evaluations")}
        for r in records if not r["finished"]
    ]
    summary = {
        "settings": settings.to_json(),
        "problems": problems,
        "failed": failed,
        "unfinished": unfinished,
        "complete": not unfinished,
    }
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    (out / TABLE_NAME).write_text(markdown_table(summary))
    for problem in settings.problems:
        chosen = [r for r in records if r["problem"] == problem and r["finished"]]
        if chosen:
            _plot_problem(out / f"{problem}.png", problem, chosen, problems[problem], settings)
    return summary


def _format_number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def markdown_table(summary: dict) -> str:
    """Format a study summary as one markdown table per problem, sorted by median final regret."""
    settings = summary["settings"]
    seeds = "seed 0" if settings["seeds"] == 1 else f"seeds 0 to {settings['seeds'] - 1}"
    points = "point" if settings["initial"] == 1 else "points"
    iterations = "iteration" if settings["iterations"] == 1 else "iterations"
    lines = [
        f"# Simple regret after {settings['initial']} Sobol {points} and {settings['iterations']} "
        f"{iterations} of {settings['acquisition']}, {seeds}",
        "",
    ]
    for problem, entry in summary["problems"].items():
        lines.append(f"## {problem}")
        lines.append("")
        if entry["optimum_known"]:
            lines.append(f"Regret is measured from the known optimum {entry['optimum']:.6g}.")
        elif entry["optimum"] is not None:
            lines.append(
                f"The optimum is unknown, so regret is measured from the best value found by any run: {entry['optimum']:.6g}."
            )
        else:
            lines.append("The optimum is unknown and no run has a finite value yet.")
        lines += [
            "",
            "| surrogate | median final regret [IQR] | median s/iteration | seeds finished |",
            "|---|---|---|---|",
        ]
        rows = sorted(
            entry["surrogates"].items(),
            key=lambda item: (item[1]["median_regret"] is None, item[1]["median_regret"] or 0.0),
        )
        for surrogate, cell in rows:
            regret = _format_number(cell["median_regret"])
            if cell["median_regret"] is not None:
                regret += f" [{_format_number(cell['q25_regret'])}, {_format_number(cell['q75_regret'])}]"
            seconds = _format_number(cell["median_seconds_per_iteration"])
            lines.append(f"| {surrogate} | {regret} | {seconds} | {cell['finished_seeds']}/{settings['seeds']} |")
        lines.append("")
    if summary["failed"]:
        lines += ["## Failed runs", "", "| run | exit status | last output line |", "|---|---|---|"]
        for failure in summary["failed"]:
            last_line = (failure["output_tail"] or failure["reason"] or "").strip().splitlines()[-1:] or [""]
            label = f"{failure['problem']}/{failure['surrogate']}/seed{failure['seed']}"
            lines.append(f"| {label} | {failure['returncode']} | {last_line[0].replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def _mean_and_stderr(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the mean over rows and its standard error, per column, skipping NaN entries.

    A column without finite entries has mean NaN, and one with a single entry has standard error 0.
    """
    finite = np.isfinite(curves)
    count = finite.sum(axis=0)
    filled = np.where(finite, curves, 0.0)
    mean = filled.sum(axis=0) / np.maximum(count, 1)
    squares = np.where(finite, (filled - mean) ** 2, 0.0).sum(axis=0)
    variance = np.where(count > 1, squares / np.maximum(count - 1, 1), 0.0)
    stderr = np.sqrt(variance / np.maximum(count, 1))
    return np.where(count > 0, mean, np.nan), stderr


def _plot_problem(path: Path, problem: str, records: list[dict], entry: dict, settings: StudySettings) -> None:
    """Plot the mean simple regret of the best value so far, with a band of one standard error."""
    # A Figure without pyplot leaves the caller's matplotlib backend alone.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    ax = figure.subplots()
    steps = np.arange(1, settings.total + 1)
    ax.axvspan(0.5, settings.initial + 0.5, color="0.9", label="Sobol design")
    for surrogate in settings.surrogates:
        curves = [r["best_so_far"] for r in records if r["surrogate"] == surrogate]
        if not curves or entry["optimum"] is None:
            continue
        mean, stderr = _mean_and_stderr(np.maximum(np.stack(curves) - entry["optimum"], 0.0))
        # The best value so far changes only at evaluations, so it is drawn as steps.
        (line,) = ax.plot(
            steps, np.maximum(mean, REGRET_FLOOR), lw=2, drawstyle="steps-post", label=f"{surrogate} ({len(curves)} seeds)"
        )
        ax.fill_between(
            steps, np.maximum(mean - stderr, REGRET_FLOOR), np.maximum(mean + stderr, REGRET_FLOOR),
            step="post", color=line.get_color(), alpha=0.2, lw=0,
        )
    ax.set_yscale("log")
    ax.set_xlim(0.5, settings.total + 0.5)
    ax.set_xlabel("evaluations")
    reference = "known optimum" if entry["optimum_known"] else "best value found in the study"
    ax.set_ylabel(f"simple regret (best so far - {reference})")
    ax.set_title(f"{problem}: mean ± standard error over seeds ({settings.acquisition})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
