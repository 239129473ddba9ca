"""Large training sets on the UCI protein data: time, peak memory and test NLL/RMSE.

Split 0 of ``protein-tertiary-structure`` (41,157 training and 4,573 test points,
9 features), the Student-t process ``tp-nngp`` throughout. Each configuration runs in its
own child process, so its peak resident memory (``ru_maxrss`` from ``os.wait4``) is its
own:

- ``subset-3000``, the reference: exact on 3,000 random training points (subset of
  data), hyperparameters fitted on ``--exact-fit-points`` of them;
- ``exact-20000``: exact on 20,000 random training points, hyperparameters fitted on
  ``--exact-fit-points`` of them and the posterior conditioned on all 20,000 through the
  row-blocked Gram matrix and blocked Cholesky factor;
- ``sparse-all``: the inducing-point approximation on all 41,157 points, hyperparameters
  and inducing inputs fitted on a random subset (``--sparse-fit-points``).

Time and memory are also given as ratios to the reference, measured in the same script.
Inputs are standardised with training statistics, as ``probnn fit`` does. Example::

    python benchmarks/large_n.py --out benchmarks/results/large_n.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "uci" / "protein-tertiary-structure"


def run_configuration(args) -> dict:
    """Fit and evaluate one configuration in this process; return its metrics."""
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from probnn.data import load_dataset, standardize
    from probnn.metrics import regression_metrics
    from probnn.processes.large import fit_large
    from probnn.processes.registry import make_regression_model

    dataset = load_dataset(args.data)
    X_train, y_train, X_test, y_test = dataset.split(0)
    X_train, X_test, _ = standardize(X_train, X_test)
    rng = np.random.default_rng(args.seed)
    if args.config == "subset-3000":
        rows, approximation, fit_points = rng.choice(X_train.shape[0], 3000, replace=False), "exact", args.exact_fit_points
    elif args.config == "exact-20000":
        rows, approximation, fit_points = rng.choice(X_train.shape[0], 20000, replace=False), "exact", args.exact_fit_points
    else:
        rows, approximation, fit_points = np.arange(X_train.shape[0]), "sparse", args.sparse_fit_points
    X, y = X_train[np.sort(rows)], y_train[np.sort(rows)]
    model = make_regression_model("tp-nngp", X.shape[1], num_restarts=args.restarts, max_iterations=args.max_iterations)
    start = time.perf_counter()
    posterior = fit_large(
        model, X, y, key=jax.random.key(args.seed), approximation=approximation,
        num_inducing=args.num_inducing, max_fit_points=fit_points, seed=args.seed,
    )
    fitted = time.perf_counter() - start
    predictive = posterior.predict(X_test)
    jax.block_until_ready(predictive.mean)
    seconds = time.perf_counter() - start
    metrics = regression_metrics(predictive, y_test, key=jax.random.key(args.seed + 1))
    record = {name: float(value) for name, value in metrics.items()}
    record.update(
        config=args.config, num_train=int(X.shape[0]), num_fit=int(min(fit_points, X.shape[0])),
        approximation=approximation, seconds=seconds, fit_and_condition_seconds=fitted,
        num_inducing=args.num_inducing if approximation == "sparse" else None,
    )
    return record


def run_child(config: str, args) -> dict:
    """Run one configuration in a child process; add its peak memory in GB."""
    command = [sys.executable, __file__, "--child", config, "--data", str(args.data), "--seed", str(args.seed),
               "--restarts", str(args.restarts), "--max-iterations", str(args.max_iterations),
               "--num-inducing", str(args.num_inducing), "--sparse-fit-points", str(args.sparse_fit_points),
               "--exact-fit-points", str(args.exact_fit_points)]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"configuration {config} failed with exit code {child.returncode}:\n{output}")
    record = json.loads(output.strip().splitlines()[-1])
    # On Linux ru_maxrss is in kilobytes.
    record.update(peak_rss_gb=usage.ru_maxrss / 1e6, wall_seconds=time.perf_counter() - start)
    return record


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="UCI protein folder (default ../shared/data/uci/...)")
    parser.add_argument("--configs", default="subset-3000,exact-20000,sparse-all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--max-iterations", type=int, default=50)
    parser.add_argument("--num-inducing", type=int, default=512)
    parser.add_argument("--sparse-fit-points", type=int, default=5000)
    parser.add_argument("--exact-fit-points", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the records")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def print_table(records: list[dict]) -> None:
    """Print a Markdown table, with time and memory also as multiples of the reference."""
    reference = next((r for r in records if r["config"] == "subset-3000"), None)
    print("\n| configuration | training points | seconds | x reference | peak GB | x reference | test NLL | RMSE | coverage 95% |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in records:
        time_ratio = f"{r['seconds'] / reference['seconds']:.1f}" if reference else "-"
        memory_ratio = f"{r['peak_rss_gb'] / reference['peak_rss_gb']:.1f}" if reference else "-"
        print(
            f"| {r['config']} | {r['num_train']} | {r['seconds']:.0f} | {time_ratio} | {r['peak_rss_gb']:.2f} | "
            f"{memory_ratio} | {r['nll']:.3f} | {r['rmse']:.3f} | {r['coverage_95']:.3f} |"
        )


def main() -> None:
    args = parse_arguments()
    if args.child is not None:
        args.config = args.child
        print(json.dumps(run_configuration(args)))
        return

    records = []
    for config in args.configs.split(","):
        record = run_child(config, args)
        records.append(record)
        print(json.dumps(record), flush=True)
    print_table(records)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(records, indent=2) + "\n")


if __name__ == "__main__":
    main()
