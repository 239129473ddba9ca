"""Time float64 NNGP Gram matrices against a plain matrix product and an RBF Gram matrix.

For each size n, the script reports the median wall time of ``NNGP(depth=3,
activation="relu")`` on n inputs in 10 dimensions, and, as references on the same
machine, one product ``X @ X.T`` and one RBF Gram matrix of the same size. Each function
is compiled with ``jax.jit`` and run once before timing, and every timed call ends with
``block_until_ready``.

Usage::

    python benchmarks/gram_matrix.py [--sizes 1000 2000 4000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax

# The benchmark measures float64, the precision the probnn tests run in.
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

from probnn.kernels import NNGP, RBF  # noqa: E402

INPUT_DIM = 10


def median_seconds(function, argument, repeats: int) -> float:
    """Return the median wall time of ``function(argument)`` after one warm-up call."""
    jax.block_until_ready(function(argument))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(argument))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def describe_machine() -> str:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return "\n".join(
        [
            f"machine: {platform.machine()}, {platform.processor() or 'unknown processor'}",
            f"CPU count: {cores} ({usable} usable by this process), load average (1, 5, 15 min): {load}",
            f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}",
            f"python {platform.python_version()}, dtype float64, input dimension {INPUT_DIM}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000], help="numbers of inputs n")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per function and size")
    args = parser.parse_args()

    print(describe_machine())

    # Kernels enter as arguments, as in hyperparameter fitting, so XLA cannot fold the
    # hyperparameters into the compiled program.
    gram = jax.jit(lambda kernel, X: kernel(X))
    nngp = NNGP(depth=3, activation="relu")
    rbf = RBF(lengthscale=1.0)
    product = jax.jit(lambda X: X @ X.T)

    print(f"median of {args.repeats} calls after a warm-up call, in milliseconds")
    header = f"{'n':>6} {'X @ X.T':>10} {'RBF':>10} {'NNGP':>10} {'NNGP/matmul':>12} {'NNGP/RBF':>9}"
    print(header)
    for n in args.sizes:
        X = jax.random.normal(jax.random.key(n), (n, INPUT_DIM), jnp.float64)
        product_time = median_seconds(product, X, args.repeats)
        rbf_time = median_seconds(lambda inputs: gram(rbf, inputs), X, args.repeats)
        nngp_time = median_seconds(lambda inputs: gram(nngp, inputs), X, args.repeats)
        print(
            f"{n:>6} {1e3 * product_time:>10.2f} {1e3 * rbf_time:>10.2f} {1e3 * nngp_time:>10.2f} "
            f"{nngp_time / product_time:>12.1f} {nngp_time / rbf_time:>9.1f}"
        )


if __name__ == "__main__":
    main()
