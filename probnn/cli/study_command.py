"""``probnn study``: compare BO surrogates on a grid of problems and seeds."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

DEFAULT_SEEDS = 5
DEFAULT_ITERATIONS = 40
DEFAULT_INITIAL = 10
DEFAULT_ACQUISITION = "logei"
DEFAULT_WORKERS = 1

# Options that set up runs, so they conflict with --summarize.
_RUN_OPTIONS = ("problems", "surrogates", "seeds", "iterations", "initial", "acquisition", "workers", "out")


def add_study_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "study",
        help="Compare BO surrogates over problems and seeds (median simple regret and seconds per iteration).",
        description=(
            "Run `probnn bo` for every problem, surrogate and seed 0..SEEDS-1, each in its own process "
            "with its outputs in OUT/runs/PROBLEM/SURROGATE/seedK/. Then write summary.json, table.md "
            "and PROBLEM.png (mean simple regret against evaluations) to OUT. Rerunning the same "
            "command skips finished runs and resumes partial ones."
        ),
    )
    parser.add_argument("--problems", default=None, metavar="NAME,...", help="comma-separated problem names; see `probnn problems`")
    parser.add_argument(
        "--surrogates", default=None, metavar="NAME,...",
        help="comma-separated surrogate names, as in `probnn bo --surrogate`; an unknown name lists the choices",
    )
    parser.add_argument("--seeds", type=int, default=None, metavar="N", help=f"number of seeds per problem and surrogate (default {DEFAULT_SEEDS})")
    parser.add_argument(
        "--iterations", type=int, default=None, metavar="N",
        help=f"BO iterations after the initial design, per run (default {DEFAULT_ITERATIONS})",
    )
    parser.add_argument("--initial", type=int, default=None, metavar="N", help=f"size of the initial Sobol design (default {DEFAULT_INITIAL})")
    parser.add_argument("--acquisition", default=None, metavar="NAME", help=f"acquisition function of every run (default {DEFAULT_ACQUISITION}); see `probnn bo --help`")
    parser.add_argument("--workers", type=int, default=None, metavar="N", help=f"number of runs at a time, each a process (default {DEFAULT_WORKERS})")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR", help="study folder")
    parser.add_argument("--no-progress", action="store_true", help="log one line per run instead of a progress bar")
    parser.add_argument(
        "--summarize", type=Path, default=None, metavar="DIR",
        help="only rebuild summary.json, table.md and the plots of the study in DIR",
    )
    parser.set_defaults(handler=run_study_command)


def run_study_command(args) -> int:
    from probnn.bo.study import SUMMARY_NAME, TABLE_NAME, run_study, sigterm_as_interrupt, summarize_study

    if args.summarize is not None:
        conflicting = [f"--{name}" for name in _RUN_OPTIONS if getattr(args, name) is not None]
        if conflicting:
            raise ValueError(
                f"--summarize only rebuilds the summary of an existing study; drop {', '.join(conflicting)}, "
                "or drop --summarize to run the study."
            )
        summary = summarize_study(args.summarize)
        _print_results(args.summarize / TABLE_NAME, args.summarize, summary)
        return 0

    missing = [f"--{name}" for name in ("problems", "surrogates", "out") if getattr(args, name) is None]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}; pass them, or pass --summarize DIR to rebuild a summary.")
    options = {
        "seeds": DEFAULT_SEEDS if args.seeds is None else args.seeds,
        "iterations": DEFAULT_ITERATIONS if args.iterations is None else args.iterations,
        "initial": DEFAULT_INITIAL if args.initial is None else args.initial,
        "acquisition": args.acquisition or DEFAULT_ACQUISITION,
        "workers": DEFAULT_WORKERS if args.workers is None else args.workers,
    }
    with sigterm_as_interrupt():
        try:
            summary = run_study(args.problems, args.surrogates, out=args.out, progress=not args.no_progress, **options)
        except KeyboardInterrupt:
            _print_interrupted(args, options, args.out / SUMMARY_NAME)
            return 130
    _print_results(args.out / TABLE_NAME, args.out, summary)
    return 1 if summary["failed"] else 0


def _print_results(table: Path, out: Path, summary: dict) -> None:
    print(table.read_text())
    for failure in summary["failed"]:
        print(
            f"{failure['problem']}/{failure['surrogate']}/seed{failure['seed']} failed: {failure['reason']}. "
            f"Its output is in {failure['folder']}/bo.log.",
            file=sys.stderr,
        )
    print(f"Results in {out}/")


def _print_interrupted(args, options: dict, summary_path: Path) -> None:
    summary = json.loads(summary_path.read_text())
    settings = summary["settings"]
    total = len(settings["problems"]) * len(settings["surrogates"]) * settings["seeds"]
    finished = total - len(summary["unfinished"])
    command = [
        "probnn", "study", "--problems", args.problems, "--surrogates", args.surrogates,
        *[part for name, value in options.items() for part in (f"--{name}", str(value))],
        "--out", str(args.out),
    ]
    if args.no_progress:
        command.append("--no-progress")
    print(
        f"Interrupted with {finished} of {total} runs finished; the summary of those is in {summary_path.parent}/. "
        f"Every told evaluation is in the run journals. Continue with: {shlex.join(command)}",
        file=sys.stderr,
    )
