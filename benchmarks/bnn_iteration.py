"""Seconds per BO iteration of each surrogate on Hartmann-6 at 50 points, and HMC quality.

Part 1 times ``BayesianOptimization.ask`` (surrogate fit plus acquisition search) for each
surrogate after telling the loop 50 evaluations of Hartmann-6 (a Sobol design), then
continues for ``--iterations`` more asks. The first ask compiles and is reported apart;
the median is over the later ones, as a BO campaign sees them.

Part 2 runs the configuration the BNN study names (NUTS, 4 chains, 500 draws each, a
2 x 50 tanh network) at the same 50 points: a cold fit, a warm-started fit, and their
R-hat, bulk ESS and test NLL on 1,000 held-out points, against a long reference run.

Example::

    python benchmarks/bnn_iteration.py --surrogates hmc,sghmc,ensemble --iterations 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from probnn.bnn.hmc import HMCNetwork  # noqa: E402
from probnn.bo.loop import BayesianOptimization  # noqa: E402
from probnn.bo.optimize import sobol_points  # noqa: E402
from probnn.bo.problems import get_problem, hartmann6  # noqa: E402
from probnn.bo.surrogates import SURROGATES  # noqa: E402
from probnn.samplers.mcmc import SamplerSettings, summarize, to_inference_data  # noqa: E402


def time_surrogate(name: str, num_points: int, iterations: int, seed: int) -> dict:
    problem = get_problem("hartmann6")
    loop = BayesianOptimization(problem.bounds, surrogate=name, num_initial=num_points, seed=seed)
    for _ in range(num_points):
        x = loop.ask()
        loop.tell(x, problem(x))
    seconds = []
    for _ in range(iterations + 1):
        start = time.perf_counter()
        x = loop.ask()
        seconds.append(time.perf_counter() - start)
        loop.tell(x, problem(x))
    return {"first_ask_s": seconds[0], "median_ask_s": float(np.median(seconds[1:])), "asks_s": seconds}


def hmc_quality(
    num_points: int, seed: int, reference_draws: int, max_doublings: int = 7, reference_doublings: int = 8,
    kernel: str = "nuts", integration_steps: int = 32,
) -> dict:
    """Time and check 4 chains of 500 draws on a 2 x 50 tanh network; ``reference_draws=0`` skips the reference run.

    ``kernel="nuts"`` caps the tree at ``max_doublings``; ``kernel="hmc"`` takes
    ``integration_steps`` leapfrog steps per draw. The reference run is always NUTS.
    """
    # Hartmann-6 lives on the unit cube, so unit and original inputs coincide.
    X = sobol_points(num_points, 6, seed)
    y = hartmann6(X)
    rng = np.random.default_rng(seed + 1)
    X_test = rng.uniform(size=(1000, 6))
    y_test = hartmann6(X_test)

    spec = SamplerSettings(
        kernel=kernel, num_warmup=500, num_samples=500, max_num_doublings=max_doublings,
        num_integration_steps=integration_steps,
    )
    model = HMCNetwork(settings=spec, num_predictive_draws=2000)
    result = {}
    # Cold runs on the first n - 2 points (the second one is compiled), then the warm
    # starts that BO iterations perform after each further evaluation.
    # The first warm start compiles the short warm-up; the second, one evaluation later,
    # reuses that program, as every later BO iteration does.
    steps = (
        ("cold", X[:-2], y[:-2], False),
        ("cold_compiled", X[:-2], y[:-2], False),
        ("warm", X[:-1], y[:-1], True),
        ("warm_compiled", X, y, True),
    )
    for index, (label, X_fit, y_fit, warm) in enumerate(steps):
        start = time.perf_counter()
        run, standardizer, inputs = model.run(X_fit, y_fit, key=jax.random.key(index), warm=warm)
        jax.block_until_ready(run)
        seconds = time.perf_counter() - start
        posterior = model.posterior_from(run, standardizer, inputs)
        nll = -float(np.mean(np.asarray(posterior.predict(X_test).log_prob(y_test))))
        result[label] = {"seconds": seconds, "test_nll": nll, **_diagnostics(model, run, inputs, X_test[:20])}
        print(label, json.dumps(result[label]), flush=True)
        if label != "cold":
            model = posterior.model

    if reference_draws == 0:
        return result
    reference_settings = SamplerSettings(num_warmup=1000, num_samples=reference_draws, max_num_doublings=reference_doublings, thinning=2)
    reference = HMCNetwork(settings=reference_settings, num_predictive_draws=4000)
    start = time.perf_counter()
    posterior = reference.fit(X, y, key=jax.random.key(99))
    nll = -float(np.mean(np.asarray(posterior.predict(X_test).log_prob(y_test))))
    result["reference"] = {"seconds": time.perf_counter() - start, "test_nll": nll, "draws_per_chain": reference_draws}
    return result


def _diagnostics(model: HMCNetwork, run, inputs, X_probe) -> dict:
    """R-hat and bulk ESS of the function values at probe inputs and of the noise."""
    from probnn.bnn.models import predict_draws

    center, scale = inputs
    probe = (X_probe - np.asarray(center)) / np.asarray(scale)
    positions = run.positions
    chains, draws = run.logdensity.shape
    flat = jax.tree.map(lambda leaf: leaf.reshape((-1, *leaf.shape[2:])), positions)
    f = np.asarray(predict_draws(flat, model.prior, probe)).reshape(chains, draws, -1)
    noise = np.exp(np.asarray(positions["noise"]))
    import arviz as az

    idata = az.from_dict(posterior={"f": f, "noise": noise}, sample_stats={"diverging": np.asarray(run.is_divergent)})
    summary = summarize(idata)
    return {
        "r_hat_max_f": summary["variables"]["f"]["r_hat_max"],
        "ess_bulk_min_f": summary["variables"]["f"]["ess_bulk_min"],
        "r_hat_noise": summary["variables"]["noise"]["r_hat_max"],
        "ess_bulk_noise": summary["variables"]["noise"]["ess_bulk_min"],
        "divergences": summary["divergences"],
        "mean_leapfrog_steps": float(np.mean(np.asarray(run.num_integration_steps))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--surrogates", default="gp-matern,tp-nngp,ibnn,hmc,sghmc,ensemble,laplace,dkl,partial")
    parser.add_argument("--points", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--reference-draws", type=int, default=2000, help="draws per chain of the reference run; 0 skips it")
    parser.add_argument("--max-doublings", type=int, default=7, help="NUTS tree depth cap of the timed runs")
    parser.add_argument("--reference-doublings", type=int, default=8, help="NUTS tree depth cap of the reference run")
    parser.add_argument("--kernel", choices=("nuts", "hmc"), default="nuts", help="sampler of the timed runs")
    parser.add_argument("--integration-steps", type=int, default=32, help="leapfrog steps per draw with --kernel hmc")
    parser.add_argument("--out", type=Path, default=Path("bnn_iteration.json"))
    args = parser.parse_args()

    report: dict = {"timing": {}, "hmc": None}
    if not args.skip_timing:
        for name in args.surrogates.split(","):
            if name not in SURROGATES:
                raise SystemExit(f"unknown surrogate {name!r}; choose from {', '.join(SURROGATES)}")
            report["timing"][name] = time_surrogate(name, args.points, args.iterations, args.seed)
            row = report["timing"][name]
            print(f"{name:10s} first ask {row['first_ask_s']:7.2f} s   median ask {row['median_ask_s']:7.2f} s", flush=True)
            args.out.write_text(json.dumps(report, indent=2))
    if not args.skip_quality:
        report["hmc"] = hmc_quality(
            args.points, args.seed, args.reference_draws, args.max_doublings, args.reference_doublings,
            args.kernel, args.integration_steps,
        )
        if "reference" in report["hmc"]:
            print("reference", json.dumps(report["hmc"]["reference"]), flush=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
