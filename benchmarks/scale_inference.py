"""Compare quadrature and importance sampling over the last-layer variance on UCI splits.

For each split, a Burr XII scale mixture of NNGPs (the ``smnngp-burr`` model of
``probnn fit``) is fitted by the marginal likelihood with quadrature. With those
hyperparameters fixed, the posterior is computed twice: by quadrature (128 nodes, the
default) and by self-normalised importance sampling from the prior. The script reports the
mean test predictive log density of each, their difference, and two timings for each
(median of repeated, compiled calls in this process), as ratios: conditioning plus
prediction, which the Cholesky factorisation shared by both dominates, and the part in
which the two differ, the integration over ``s`` plus the test log density of the mixture.

Usage::

    python benchmarks/scale_inference.py /path/to/uci/bostonHousing [--splits 10] [--samples 4096]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import numpy as np  # noqa: E402

from probnn.data import load_dataset, standardize  # noqa: E402
from probnn.processes.registry import make_regression_model  # noqa: E402
from probnn.processes.scale_mixture import _nodes_program  # noqa: E402


def timed(function, repeats: int) -> float:
    """Median wall time of ``function()`` after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def eqx_replace_nodes(posterior, nodes):
    """Return ``posterior`` with new scale nodes, leaving the factorised data as they are."""
    return eqx.tree_at(lambda p: p.scale_nodes, posterior, nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="UCI split folder, e.g. bostonHousing")
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--samples", type=int, default=4096, help="importance samples")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    dataset = load_dataset(args.data)
    print(f"{dataset.name}: quadrature (128 nodes) vs importance sampling ({args.samples} prior draws)")
    print(
        "| split | log density, quadrature | log density, IS | difference | ESS | condition + predict: "
        "quad. (ms) | IS (ms) | IS / quad. | integration over s: quad. (ms) | IS (ms) | IS / quad. |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    differences, ratios, integration_ratios = [], [], []
    for k in range(args.splits):
        X_train, y_train, X_test, y_test = dataset.split(k)
        X_train, X_test, _ = standardize(X_train, X_test)
        model = make_regression_model("smnngp-burr", X_train.shape[1], num_restarts=2, max_iterations=100)
        fitted = model.fit(X_train, y_train, key=jax.random.key(k)).model
        quadrature = fitted
        importance = type(fitted)(
            fitted.kernel, fitted.scale_prior, float(fitted.noise),
            inference="importance", num_importance_samples=args.samples, importance_seed=k,
        )

        def evaluate(model):
            posterior = model.condition(X_train, y_train)
            predictive = posterior.predict(X_test)
            return posterior, np.asarray(predictive.log_prob(y_test))

        posterior_quadrature, log_density_quadrature = evaluate(quadrature)
        posterior_importance, log_density_importance = evaluate(importance)
        seconds_quadrature = timed(lambda: evaluate(quadrature), args.repeats)
        seconds_importance = timed(lambda: evaluate(importance), args.repeats)

        def integrate(model, posterior):
            nodes = _nodes_program(model, posterior.quadratic, posterior.data.n)
            predictive = eqx_replace_nodes(posterior, nodes).predict(X_test)
            return np.asarray(predictive.log_prob(y_test))

        integration_quadrature = timed(lambda: integrate(quadrature, posterior_quadrature), args.repeats)
        integration_importance = timed(lambda: integrate(importance, posterior_importance), args.repeats)
        integration_ratios.append(integration_importance / integration_quadrature)
        mean_quadrature = float(np.mean(log_density_quadrature))
        mean_importance = float(np.mean(log_density_importance))
        difference = mean_importance - mean_quadrature
        ess = float(posterior_importance.scale_nodes.effective_sample_size())
        differences.append(difference)
        ratios.append(seconds_importance / seconds_quadrature)
        print(
            f"| {k} | {mean_quadrature:.5f} | {mean_importance:.5f} | {difference:+.2e} | {ess:.0f} | "
            f"{1e3 * seconds_quadrature:.1f} | {1e3 * seconds_importance:.1f} | {ratios[-1]:.2f} | "
            f"{1e3 * integration_quadrature:.2f} | {1e3 * integration_importance:.2f} | {integration_ratios[-1]:.1f} |",
            flush=True,
        )
    print(
        f"\nmax |difference| {max(abs(d) for d in differences):.2e}; median time ratio IS / quadrature "
        f"{statistics.median(ratios):.2f} (condition + predict), {statistics.median(integration_ratios):.1f} "
        "(integration over s and mixture log density)"
    )


if __name__ == "__main__":
    main()
