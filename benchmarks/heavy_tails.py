"""Test NLL of the NNGP, Student-t and Burr XII processes on data with heavy-tailed noise.

Each seed draws 50 training and 500 test points of ``sin(3x)`` with Student-t noise (2.1
degrees of freedom, scale 0.1) and 6% gross outliers (shifts of 3 to 6) in both parts,
from :func:`probnn.data.synthetic.contaminated_sine`. Each model is fitted by the
marginal likelihood (2 restarts, 100 L-BFGS iterations) and scored by the mean test
negative log likelihood per point.

Usage::

    python benchmarks/heavy_tails.py [--seeds 10]
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from probnn.data.synthetic import contaminated_sine  # noqa: E402
from probnn.kernels import NNGP  # noqa: E402
from probnn.priors import BurrXII  # noqa: E402
from probnn.processes import GaussianProcess, ScaleMixtureProcess, StudentTProcess  # noqa: E402

MODELS = {
    "NNGP": lambda: GaussianProcess(NNGP(depth=2), num_restarts=2, max_iterations=100),
    "Student-t (inverse gamma)": lambda: StudentTProcess(NNGP(depth=2), num_restarts=2, max_iterations=100),
    "Burr XII": lambda: ScaleMixtureProcess(NNGP(depth=2), BurrXII(2.0, 2.0), num_restarts=2, max_iterations=100),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()

    results = {name: [] for name in MODELS}
    print("| seed | " + " | ".join(MODELS) + " |")
    print("|---|" + "---|" * len(MODELS))
    for seed in range(args.seeds):
        X, y, X_test, y_test = contaminated_sine(seed)
        row = []
        for name, build in MODELS.items():
            posterior = build().fit(X, y, key=jax.random.key(seed))
            nll = -float(jnp.mean(posterior.predict(X_test).log_prob(y_test)))
            results[name].append(nll)
            row.append(f"{nll:.4f}")
        print(f"| {seed} | " + " | ".join(row) + " |", flush=True)

    print()
    baseline = np.array(results["NNGP"])
    for name, values in results.items():
        values = np.array(values)
        stderr = values.std(ddof=1) / np.sqrt(values.size)
        wins = int(np.sum(values < baseline))
        print(f"{name}: mean test NLL {values.mean():.4f} ± {stderr:.4f}; below NNGP on {wins} of {values.size} seeds")


if __name__ == "__main__":
    main()
