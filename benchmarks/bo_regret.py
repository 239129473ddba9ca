"""Median simple regret of BO surrogates on benchmark problems, over several seeds.

Each run uses a Sobol design of ``--initial`` points followed by ``--iterations`` BO
steps with log expected improvement. This script runs the same study as `probnn study`
(probnn.bo.study): every run is a `probnn bo` output folder under
``--out/runs/PROBLEM/SURROGATE/seedK/``, resumable and skipped when already finished. It
writes summary.json, table.md and one PROBLEM.png per problem to ``--out`` and prints the
table of the median and interquartile range of the final simple regret.

Example::

    python benchmarks/bo_regret.py --problems branin,hartmann6 \
        --surrogates tp-nngp,gp-nngp,random --seeds 5 --out runs/regret
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from probnn.bo.study import TABLE_NAME, run_study, sigterm_as_interrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="branin,hartmann6", help="comma-separated problem names")
    parser.add_argument("--surrogates", default="tp-nngp,gp-nngp,random", help="comma-separated surrogate names")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. SEEDS-1 per problem and surrogate")
    parser.add_argument("--iterations", type=int, default=40, help="BO iterations after the initial design")
    parser.add_argument("--initial", type=int, default=10, help="size of the initial Sobol design")
    parser.add_argument("--acquisition", default="logei", help="acquisition function, as in `probnn bo`")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="number of runs at a time (default: CPU count)")
    parser.add_argument("--out", type=Path, default=Path("runs/regret"), help="study folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    with sigterm_as_interrupt():
        try:
            summary = run_study(
                args.problems, args.surrogates, seeds=args.seeds, iterations=args.iterations, initial=args.initial,
                out=args.out, acquisition=args.acquisition, workers=args.workers,
            )
        except KeyboardInterrupt:
            print(f"Interrupted; rerun the same command to continue the study in {args.out}.", file=sys.stderr)
            return 130
        except ValueError as error:
            print(f"bo_regret.py: error: {error}", file=sys.stderr)
            return 2
    print((args.out / TABLE_NAME).read_text())
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
