"""Median simple regret of BO surrogates on benchmark problems, over several seeds.

Each run uses a Sobol design of ``--initial`` points followed by ``--iterations`` BO
steps with log expected improvement. Runs are written as `probnn bo` output folders under
``--out`` (resumable, and skipped when already finished), and the script prints a table
of the median and interquartile range of the final simple regret.

Example::

    python benchmarks/bo_regret.py --problems branin,hartmann6 \
        --surrogates tp-nngp,gp-nngp,random --seeds 5 --out runs/regret
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def run_one(problem: str, surrogate: str, seed: int, args) -> dict:
    out = args.out / f"{problem}-{surrogate}-s{seed}"
    results = out / "results.json"
    if results.exists():
        record = json.loads(results.read_text())
        if record["evaluations"] >= args.initial + args.iterations:
            return record
    if (out / "journal.jsonl").exists():
        command = ["bo", "--resume", str(out)]
    else:
        command = [
            "bo", "--problem", problem, "--surrogate", surrogate, "--seed", str(seed),
            "--iterations", str(args.iterations), "--initial", str(args.initial), "--out", str(out),
        ]
    subprocess.run(
        [sys.executable, "-m", "probnn.cli.main", *command, "--no-progress"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return json.loads(results.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", default="branin,hartmann6")
    parser.add_argument("--surrogates", default="tp-nngp,gp-nngp,random")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--initial", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=Path("runs/regret"))
    args = parser.parse_args()

    jobs = [
        (problem, surrogate, seed)
        for problem in args.problems.split(",")
        for surrogate in args.surrogates.split(",")
        for seed in range(args.seeds)
    ]
    with ThreadPoolExecutor(args.workers) as pool:
        records = list(pool.map(lambda job: run_one(*job, args), jobs))

    print(f"Simple regret after {args.initial} Sobol points + {args.iterations} iterations, {args.seeds} seeds")
    print(f"{'problem':<12} {'surrogate':<10} {'median':>10} {'q25':>10} {'q75':>10} {'s/iter':>8}")
    for problem in args.problems.split(","):
        for surrogate in args.surrogates.split(","):
            chosen = [r for r in records if r["problem"] == problem and r["surrogate"] == surrogate]
            regret = np.array([r["simple_regret"] for r in chosen])
            per_iteration = [r["median_seconds_per_iteration"] for r in chosen if r["median_seconds_per_iteration"]]
            seconds = f"{np.median(per_iteration):8.3f}" if per_iteration else f"{'-':>8}"
            q25, median, q75 = np.percentile(regret, [25, 50, 75])
            print(f"{problem:<12} {surrogate:<10} {median:10.4g} {q25:10.4g} {q75:10.4g} {seconds}")


if __name__ == "__main__":
    main()
