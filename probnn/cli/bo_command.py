"""``probnn bo`` and ``probnn problems``: run Bayesian optimization on a named problem."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

logger = logging.getLogger("probnn.cli")

DEFAULT_PROBLEM = "svr-diabetes"
DEFAULT_SURROGATE = "tp-nngp"
DEFAULT_ITERATIONS = 30
DEFAULT_INITIAL = 10
JOURNAL_NAME = "journal.jsonl"


def add_bo_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bo",
        help="Minimise a benchmark or tuning problem with Bayesian optimization.",
        description=(
            "Run Bayesian optimization on a named problem and write results.json, evaluations.csv, "
            "journal.jsonl and convergence.png to the output folder. With no options it tunes an "
            f"SVR on scikit-learn's diabetes data ({DEFAULT_PROBLEM}) with the {DEFAULT_SURROGATE} "
            "surrogate. List problems with `probnn problems`."
        ),
    )
    parser.add_argument("--problem", default=None, help=f"problem name (default {DEFAULT_PROBLEM}); see `probnn problems`")
    parser.add_argument(
        "--surrogate", default=None,
        help="surrogate model (default tp-nngp); list them with `probnn surrogates`",
    )
    parser.add_argument(
        "--acquisition", default=None, help="logei (default), ucb, pi or ts (Thompson sampling)"
    )
    parser.add_argument(
        "--iterations", type=int, default=None,
        help=(
            f"evaluations after the initial design (default {DEFAULT_ITERATIONS}); with --resume, "
            "the new number of evaluations after the initial design"
        ),
    )
    parser.add_argument("--initial", type=int, default=None, help=f"size of the initial Sobol design (default {DEFAULT_INITIAL})")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the design and the search (default 0)")
    parser.add_argument("--beta", type=float, default=None, help="exploration weight of ucb (default 2.0)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default runs/bo-PROBLEM-SURROGATE-sSEED-TIME)")
    parser.add_argument("--resume", type=Path, default=None, metavar="DIR", help="continue the run whose files are in DIR")
    parser.add_argument("--no-progress", action="store_true", help="log one line per evaluation instead of a progress bar")
    parser.add_argument(
        "--storage", default=None, metavar="URL",
        help=(
            "run as one worker of an Optuna study in this RDB storage (e.g. sqlite:///study.db or "
            "postgresql://user@localhost/db); every worker started with the same --storage and "
            "--study shares the evaluations, and together they stop at --initial + --iterations trials"
        ),
    )
    parser.add_argument("--study", default=None, metavar="NAME", help="Optuna study name, required with --storage")
    parser.set_defaults(handler=run_bo)


def add_problems_parser(subparsers) -> None:
    parser = subparsers.add_parser("problems", help="List the optimization problems with their dimensions and optima.")
    parser.set_defaults(handler=run_problems)


def add_surrogates_parser(subparsers) -> None:
    parser = subparsers.add_parser("surrogates", help="List the surrogate models of `probnn bo` and `probnn study`.")
    parser.set_defaults(handler=run_surrogates)


def run_surrogates(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from probnn.bo.surrogates import SURROGATE_DESCRIPTIONS, SURROGATES

    table = Table(title="probnn BO surrogates")
    table.add_column("name")
    table.add_column("description")
    for name in SURROGATES:
        table.add_row(name, SURROGATE_DESCRIPTIONS.get(name, ""))
    Console().print(table)
    return 0


def run_problems(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from probnn.bo.problems import get_problem, list_problems

    table = Table(title="probnn optimization problems (minimisation)")
    for column in ("name", "dim", "optimum", "description"):
        table.add_column(column)
    for name in list_problems():
        problem = get_problem(name)
        optimum = "unknown" if problem.optimum is None else f"{problem.optimum:.6g}"
        table.add_row(name, str(problem.dim), optimum, problem.description)
    Console().print(table)
    return 0


def _settings_for_new_run(args) -> dict:
    return {
        "problem": args.problem or DEFAULT_PROBLEM,
        "surrogate": args.surrogate or DEFAULT_SURROGATE,
        "acquisition": args.acquisition or "logei",
        "iterations": DEFAULT_ITERATIONS if args.iterations is None else args.iterations,
        "initial": DEFAULT_INITIAL if args.initial is None else args.initial,
        "seed": 0 if args.seed is None else args.seed,
        "beta": 2.0 if args.beta is None else args.beta,
    }


def _check_counts(iterations: int, initial: int, surrogate: str | None = None) -> None:
    if iterations < 0:
        raise ValueError(f"--iterations must be >= 0, got {iterations}.")
    if initial < 1:
        raise ValueError(f"--initial must be >= 1, got {initial}.")
    from probnn.bo.surrogates import surrogate_limit

    limit = surrogate_limit(surrogate) if surrogate else None
    # The last proposal is fitted on all but one evaluation.
    if limit is not None and initial + iterations - 1 > limit:
        raise ValueError(
            f"The {surrogate} surrogate conditions on at most {limit} evaluations, so a run has at most "
            f"{limit + 1} (the last one is proposed from the {limit} before it). --initial {initial} and "
            f"--iterations {iterations} make {initial + iterations}; lower --iterations to at most "
            f"{limit + 1 - initial}."
        )


def run_bo(args) -> int:
    from probnn.bo.loop import BayesianOptimization
    from probnn.bo.problems import get_problem

    if args.storage is not None or args.study is not None:
        return run_optuna_worker(args)
    if args.resume is not None:
        conflicting = [name for name in ("problem", "surrogate", "acquisition", "initial", "seed", "beta", "out") if getattr(args, name) is not None]
        if conflicting:
            raise ValueError(
                f"--resume continues a run with its recorded settings; drop {', '.join('--' + n for n in conflicting)} "
                "(only --iterations may change, as the new total after the initial design)."
            )
        out = args.resume
        loop = BayesianOptimization.resume(out / JOURNAL_NAME)
        metadata = loop.metadata
        problem = get_problem(metadata["problem"], seed=loop.seed)
        iterations = metadata["iterations"] if args.iterations is None else args.iterations
        _check_counts(iterations, loop.num_initial, loop.surrogate)
        previous_seconds, previous_iteration_seconds = _previous_timing(out)
        # Times beyond the journal's BO iterations belong to evaluations no longer in it.
        previous_iteration_seconds = previous_iteration_seconds[: max(loop.num_evaluations - loop.num_initial, 0)]
        logger.info("Resuming %s with %d recorded evaluations.", out, loop.num_evaluations)
    else:
        settings = _settings_for_new_run(args)
        _check_counts(settings["iterations"], settings["initial"], settings["surrogate"])
        problem = get_problem(settings["problem"], seed=settings["seed"])
        iterations = settings["iterations"]
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = args.out or Path("runs") / f"bo-{problem.name}-{settings['surrogate']}-s{settings['seed']}-{stamp}"
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file, not a folder; pass a folder path.")
        if (out / JOURNAL_NAME).exists():
            raise ValueError(f"{out} already contains a run; continue it with `probnn bo --resume {out}` or pick another --out.")
        loop = BayesianOptimization(
            problem.bounds,
            surrogate=settings["surrogate"],
            acquisition=settings["acquisition"],
            num_initial=settings["initial"],
            seed=settings["seed"],
            beta=settings["beta"],
            parameter_names=problem.parameter_names,
            journal=out / JOURNAL_NAME,
            metadata={"problem": problem.name, "iterations": iterations},
        )
        previous_seconds, previous_iteration_seconds = 0.0, []

    total = loop.num_initial + iterations
    if loop.num_evaluations >= total:
        logger.info(
            "%s already has %d evaluations (%d requested); nothing to run.", out, loop.num_evaluations, total
        )
    start = time.perf_counter()
    # Seconds of each ask after the initial design, those of earlier sessions of a resumed run first.
    iteration_seconds: list[float] = list(previous_iteration_seconds)
    interrupted = False
    previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        _optimize(loop, problem, total, iteration_seconds, show_progress=not args.no_progress)
    except KeyboardInterrupt:
        interrupted = True
        # The interrupt can land between the journal write and the in-memory update of
        # tell, so the outputs are rebuilt from the journal, which is the record of truth.
        loop = BayesianOptimization.resume(out / JOURNAL_NAME)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    seconds = previous_seconds + time.perf_counter() - start
    results = _write_outputs(out, loop, problem, seconds, iteration_seconds, iterations)
    if interrupted:
        print(f"Interrupted after {loop.num_evaluations} evaluations; every told evaluation is in "
              f"{out / JOURNAL_NAME}. Continue with: probnn bo --resume {out}", file=sys.stderr)
        return 130
    _print_summary(out, results)
    return 0


def run_optuna_worker(args) -> int:
    """Run trials of a shared Optuna study until it contains ``--initial + --iterations`` trials.

    Finished and running trials both count, so workers stop together. Workers that start
    their last trials at the same moment can overshoot by one trial each. The storage
    records a heartbeat of every running trial, and a trial whose worker died is marked
    failed after ``STALE_TRIAL_SECONDS``, so it no longer counts as running.
    """
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    from probnn.bo.problems import get_problem
    from probnn.integrations.optuna import ProbnnSampler

    if args.storage is None or args.study is None:
        raise ValueError("--storage and --study go together: pass both to run as a worker of a shared Optuna study.")
    if args.resume is not None:
        raise ValueError("--resume continues a journal of a single run; a shared study continues by starting workers again.")
    settings = _settings_for_new_run(args)
    _check_counts(settings["iterations"], settings["initial"], settings["surrogate"])
    problem = get_problem(settings["problem"], seed=settings["seed"])
    total = settings["initial"] + settings["iterations"]
    names = problem.parameter_names or [f"x{i + 1}" for i in range(problem.dim)]
    sampler = ProbnnSampler(settings["surrogate"], settings["acquisition"], n_startup_trials=settings["initial"])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_shared_study(args.storage, args.study, sampler)

    def objective(trial):
        x = np.array([trial.suggest_float(name, low, high) for name, (low, high) in zip(names, problem.bounds)])
        value = float(problem(x))
        if args.no_progress:
            logger.info("trial %d: y = %.6g", trial.number, value)
        return value

    counted = (TrialState.COMPLETE, TrialState.RUNNING)
    before = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if len(study.get_trials(deepcopy=False, states=counted)) < total:
        study.optimize(objective, callbacks=[MaxTrialsCallback(total, states=counted)])
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = min(t.value for t in complete) if complete else float("nan")
    regret = "" if problem.optimum is None else f" (simple regret {best - problem.optimum:.4g})"
    print(
        f"{problem.name}: study {args.study!r} contains {len(complete)} finished trials ({len(complete) - before} "
        f"since this worker started), best value {best:.6g}{regret}."
    )
    return 0


#: Seconds without a heartbeat after which a running trial counts as failed.
STALE_TRIAL_SECONDS = 60


def _open_shared_study(url: str, name: str, sampler):
    """Create or load the study, retrying while another worker creates the same tables."""
    import optuna
    import sqlalchemy.exc

    for attempt in range(10):
        try:
            storage = optuna.storages.RDBStorage(url, heartbeat_interval=10, grace_period=STALE_TRIAL_SECONDS)
            return optuna.create_study(storage=storage, study_name=name, sampler=sampler, load_if_exists=True)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError, optuna.exceptions.DuplicatedStudyError):
            # Workers started together race to create the schema and the study, and the
            # losers find them on the next attempt.
            if attempt == 9:
                raise
            time.sleep(0.5 + 0.5 * attempt)


def _raise_interrupt(signum, frame):
    # SIGTERM (kill, timeout, batch schedulers) ends the run like Ctrl-C, so the outputs
    # and the resume hint are written before the process exits.
    raise KeyboardInterrupt


def _optimize(loop, problem, total: int, iteration_seconds: list, show_progress: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    def describe():
        best = loop.best_value
        return "best: -" if best is None else f"best: {best:.6g}"

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[best]}"), TimeElapsedColumn()]
    with Progress(*columns, disable=not show_progress, transient=False) as progress:
        task = progress.add_task(f"{problem.name} / {loop.surrogate}", total=total, completed=loop.num_evaluations, best=describe())
        while loop.num_evaluations < total:
            before = time.perf_counter()
            x = loop.ask()
            asked = time.perf_counter()
            y = problem(x)
            loop.tell(x, y)
            if loop.num_evaluations > loop.num_initial:
                iteration_seconds.append(asked - before)
            progress.update(task, completed=loop.num_evaluations, best=describe())
            if not show_progress:
                logger.info("evaluation %d/%d: y = %.6g, %s", loop.num_evaluations, total, y, describe())


def _previous_timing(out: Path) -> tuple[float, list[float]]:
    """Return the total seconds and the per-iteration seconds stored by earlier sessions of a run.

    A missing or unreadable results.json, or one written before per-iteration times were
    stored, contributes nothing.
    """
    try:
        results = json.loads((out / "results.json").read_text())
        seconds = float(results.get("seconds", 0.0))
        iteration_seconds = [float(value) for value in results.get("iteration_seconds", [])]
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0, []
    return seconds, iteration_seconds


def _write_outputs(out: Path, loop, problem, seconds: float, iteration_seconds: list, iterations: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    best_x = loop.best_x
    regret = None
    if problem.optimum is not None and loop.best_value is not None:
        regret = max(loop.best_value - problem.optimum, 0.0)
    results = {
        "problem": problem.name,
        "dim": problem.dim,
        "surrogate": loop.surrogate,
        "acquisition": loop.acquisition,
        "seed": loop.seed,
        "initial": loop.num_initial,
        "iterations": iterations,
        "evaluations": loop.num_evaluations,
        "complete": loop.num_evaluations >= loop.num_initial + iterations,
        "best_value": loop.best_value,
        "best_x": None if best_x is None else dict(zip(loop.parameter_names, best_x.tolist())),
        "optimum": problem.optimum,
        "simple_regret": regret,
        "seconds": round(seconds, 3),
        "median_seconds_per_iteration": float(np.median(iteration_seconds)) if iteration_seconds else None,
        "iteration_seconds": [round(value, 6) for value in iteration_seconds],
        "messages": loop.messages,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    _write_csv(out / "evaluations.csv", loop)
    _plot_convergence(out / "convergence.png", loop, problem)
    return results


def _write_csv(path: Path, loop) -> None:
    records = loop._journal.evaluations if loop._journal is not None else []
    best = np.inf
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["evaluation", *loop.parameter_names, "y", "best_so_far", "phase"])
        for number, record in enumerate(records, start=1):
            y = record["y"]
            if y is not None:
                best = min(best, y)
            phase = "initial" if number <= loop.num_initial else "bo"
            writer.writerow([number, *record["x"], "" if y is None else y, "" if not np.isfinite(best) else best, phase])


def _plot_convergence(path: Path, loop, problem) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = loop._journal.evaluations if loop._journal is not None else []
    values = np.array([np.nan if r["y"] is None else r["y"] for r in records], dtype=float)
    best = np.fmin.accumulate(np.where(np.isnan(values), np.inf, values)) if values.size else values
    best = np.where(np.isfinite(best), best, np.nan)
    steps = np.arange(1, values.size + 1)
    show_regret = problem.optimum is not None and values.size > 0
    fig, axes = plt.subplots(1, 2 if show_regret else 1, figsize=(11 if show_regret else 6, 4), squeeze=False)
    ax = axes[0, 0]
    ax.plot(steps, values, "o", ms=3, alpha=0.4, label="evaluation")
    ax.step(steps, best, where="post", lw=2, label="best so far")
    if problem.optimum is not None:
        ax.axhline(problem.optimum, ls="--", color="k", lw=1, label="optimum")
    ax.axvline(loop.num_initial + 0.5, color="grey", lw=1, ls=":", label="end of Sobol design")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("objective value")
    ax.set_title(f"{problem.name}: {loop.surrogate}, {loop.acquisition}, seed {loop.seed}")
    ax.legend(fontsize=8)
    if show_regret:
        regret = np.maximum(best - problem.optimum, 1e-12)
        ax = axes[0, 1]
        ax.step(steps, regret, where="post", lw=2)
        ax.set_yscale("log")
        ax.axvline(loop.num_initial + 0.5, color="grey", lw=1, ls=":")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("simple regret (best - optimum)")
        ax.set_title("simple regret")
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print_summary(out: Path, results: dict) -> None:
    regret = results["simple_regret"]
    regret_text = "unknown optimum" if regret is None else f"simple regret {regret:.4g}"
    print(
        f"{results['problem']} with {results['surrogate']}: best value {results['best_value']:.6g} after "
        f"{results['evaluations']} evaluations ({regret_text}), {results['seconds']:.1f} s. Results in {out}/"
    )
