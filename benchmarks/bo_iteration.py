"""Seconds per BO iteration (hyperparameter fit plus acquisition search) on Hartmann-6.

The loop is told 50 Sobol points, then ``--iterations`` more ask/tell steps are timed
after two warm-up steps (which compile). As an in-script reference, the same data are
fitted with scikit-learn's GaussianProcessRegressor (Matern-5/2 with ARD, the same
number of optimizer restarts), so the ratio says how our compiled fit compares with a
widely used NumPy implementation on the same machine.

Example::

    python benchmarks/bo_iteration.py --surrogates tp-nngp,gp-nngp,gp-matern
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from sklearn.gaussian_process import GaussianProcessRegressor  # noqa: E402
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel  # noqa: E402

from probnn.bo import BayesianOptimization, get_problem  # noqa: E402
from probnn.bo.surrogates import LOOP_RESTARTS  # noqa: E402


def time_surrogate(name: str, iterations: int, num_points: int) -> dict:
    problem = get_problem("hartmann6")
    loop = BayesianOptimization(problem.bounds, surrogate=name, num_initial=num_points, seed=0)
    while loop.num_evaluations < num_points:
        x = loop.ask()
        loop.tell(x, problem(x))
    fits, searches, totals = [], [], []
    for step in range(iterations + 2):
        start = time.perf_counter()
        x = loop.ask()
        elapsed = time.perf_counter() - start
        loop.tell(x, problem(x))
        if step >= 2:
            fits.append(loop.last_timing["fit"])
            searches.append(loop.last_timing["acquisition"])
            totals.append(elapsed)
    return {"fit": np.median(fits), "acquisition": np.median(searches), "total": np.median(totals)}


def time_sklearn(num_points: int, repeats: int = 5) -> float:
    problem = get_problem("hartmann6")
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(num_points, 6))
    y = np.array([problem(problem.bounds[:, 0] + x * (problem.bounds[:, 1] - problem.bounds[:, 0])) for x in X])
    kernel = ConstantKernel() * Matern(length_scale=np.ones(6), nu=2.5) + WhiteKernel(1e-3)
    times = []
    for _ in range(repeats):
        model = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=LOOP_RESTARTS - 1, random_state=0)
        start = time.perf_counter()
        model.fit(X, y)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--surrogates", default="tp-nngp,gp-nngp,gp-matern")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--points", type=int, default=50)
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__}, backend {jax.default_backend()}")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')} OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE')}")
    reference = time_sklearn(args.points)
    print(f"reference: scikit-learn GaussianProcessRegressor fit at n={args.points}: {reference:.3f} s")
    print(f"{'surrogate':<10} {'fit s':>8} {'search s':>9} {'total s':>8} {'total / reference':>18}")
    for name in args.surrogates.split(","):
        timing = time_surrogate(name, args.iterations, args.points)
        print(f"{name:<10} {timing['fit']:8.3f} {timing['acquisition']:9.3f} {timing['total']:8.3f} {timing['total'] / reference:18.2f}")


if __name__ == "__main__":
    main()
