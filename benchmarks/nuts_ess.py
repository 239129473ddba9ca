"""Compare the bulk ESS per second of probnn's NUTS with numpyro's NUTS on a small BNN.

The target is the posterior of a 1-10-1 tanh BNN (``probnn.bnn.models.bnn_regression``
with ``NetworkPrior(widths=(10,), activation="tanh")``: standard-normal weight sites and
an inferred log-normal noise) on 50 standardised points of a noisy 1-d function. Three
samplers run with the same number of chains, warm-up steps and draws, the same target
acceptance rate and the same maximum tree depth:

- ``probnn``: ``probnn.samplers.mcmc.sample`` (blackjax NUTS with Stan's window
  adaptation), jitted as one program with the chains vmapped;
- ``numpyro vectorized``: ``numpyro.infer.MCMC(NUTS(...), chain_method="vectorized")``;
- ``numpyro sequential``: the same with ``chain_method="sequential"``.

Weights are not identifiable (hidden units can be permuted and their signs flipped), so
ESS is measured on quantities every sampler identifies: the network's output at a few
test inputs and the noise standard deviation. The score of a run is the minimum of
arviz's bulk ESS over those quantities divided by the wall time of the run (warm-up and
sampling). Each sampler runs once to compile and then ``--repeats`` more times with new
keys; the timed runs exclude compilation and the table reports their median.

Also reported: leapfrog steps per draw (the cost in gradients), divergent transitions,
and two estimates that separate the algorithm from the implementation. Bulk ESS per 1000
gradients is the sampler's statistical efficiency, independent of the machine. Seconds per
1000 gradients is the cost of one gradient in each implementation, with dispatch and
vmap lockstep included. Both count the warm-up's gradients at the sampling phase's rate,
because only the sampling phase records its steps.

Usage::

    python benchmarks/nuts_ess.py [--chains 4] [--warmup 500] [--samples 500]
        [--max-tree-depth 10] [--target-accept 0.8] [--repeats 1] [--breakdown]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax

# probnn's tests and BO loop run in float64, and both samplers get the same precision.
jax.config.update("jax_enable_x64", True)

import arviz as az  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

from probnn.bnn.models import NetworkPrior, bnn_regression, predict_draws  # noqa: E402
from probnn.samplers.mcmc import NumpyroTarget, SamplerSettings, initial_positions, sample  # noqa: E402

PRIOR = NetworkPrior(widths=(10,), activation="tanh")
NUM_POINTS = 50
NOISE = 0.1
#: Inputs (standardised scale) at which the network's output is tracked for the ESS.
TEST_INPUTS = np.array([-1.5, -0.5, 0.0, 0.5, 1.5])


def make_data(seed: int = 0):
    """50 noisy points of ``sin(2x) + 0.3 x`` on ``[-2, 2]``, standardised, with a full mask."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, NUM_POINTS)
    y = np.sin(2.0 * x) + 0.3 * x + NOISE * rng.standard_normal(NUM_POINTS)
    X = ((x - x.mean()) / x.std())[:, None]
    y = (y - y.mean()) / y.std()
    return jnp.asarray(X), jnp.asarray(y), jnp.ones(NUM_POINTS, dtype=bool)


def tracked_quantities(sites: dict, noise) -> dict:
    """Network outputs at ``TEST_INPUTS`` and the noise, each with leading (chain, draw) axes."""
    chains, draws = noise.shape
    flat = {name: value.reshape((chains * draws, *value.shape[2:])) for name, value in sites.items()}
    outputs = predict_draws(flat, PRIOR, jnp.asarray(TEST_INPUTS)[:, None])
    return {"f": np.asarray(outputs).reshape(chains, draws, -1), "noise": np.asarray(noise)}


def min_bulk_ess(quantities: dict) -> float:
    ess = az.ess(az.convert_to_dataset(quantities), method="bulk")
    return float(min(np.min(ess[name].values) for name in quantities))


class RunRecord:
    """Wall time, minimum bulk ESS, total leapfrog steps and divergences of one timed run."""

    def __init__(self, seconds: float, ess: float, steps: np.ndarray, divergences: int):
        self.seconds = seconds
        self.ess = ess
        self.steps_per_draw = float(np.mean(steps))
        self.divergences = divergences


# -- probnn --------------------------------------------------------------------------


def probnn_program(settings: SamplerSettings):
    def run(key, X, y, mask, positions):
        target = NumpyroTarget(bnn_regression, (X, y, mask, PRIOR), {})
        return sample(key, target.logdensity, positions, settings)

    return jax.jit(run)


def run_probnn(program, key, data, starts) -> tuple[RunRecord, float]:
    start = time.perf_counter()
    result = jax.block_until_ready(program(key, *data, starts))
    seconds = time.perf_counter() - start
    positions = {name: value for name, value in result.positions.items() if name != "noise"}
    quantities = tracked_quantities(positions, jnp.exp(result.positions["noise"]))
    record = RunRecord(seconds, min_bulk_ess(quantities), np.asarray(result.num_integration_steps),
                       int(jnp.sum(result.divergences)))
    return record, result


# -- numpyro -------------------------------------------------------------------------


def numpyro_sampler(args, chain_method: str) -> MCMC:
    kernel = NUTS(bnn_regression, target_accept_prob=args.target_accept, max_tree_depth=args.max_tree_depth)
    return MCMC(
        kernel,
        num_warmup=args.warmup,
        num_samples=args.samples,
        num_chains=args.chains,
        chain_method=chain_method,
        progress_bar=False,
    )


def run_numpyro(mcmc: MCMC, key, data) -> RunRecord:
    X, y, mask = data
    start = time.perf_counter()
    mcmc.run(key, X, y, mask, PRIOR, extra_fields=("num_steps", "diverging"))
    samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
    seconds = time.perf_counter() - start
    extra = mcmc.get_extra_fields(group_by_chain=True)
    sites = {name: value for name, value in samples.items() if name.startswith("z_")}
    quantities = tracked_quantities(sites, samples["noise"])
    return RunRecord(seconds, min_bulk_ess(quantities), np.asarray(extra["num_steps"]), int(np.sum(extra["diverging"])))


# -- report --------------------------------------------------------------------------


def describe_machine() -> str:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return "\n".join(
        [
            f"machine: {platform.machine()}, {platform.processor() or 'unknown processor'}",
            f"CPU count: {cores} ({usable} usable by this process), load average (1, 5, 15 min): {load}",
            f"jax {jax.__version__}, numpyro {numpyro.__version__}, backend {jax.default_backend()}, float64",
        ]
    )


def summarize_runs(name: str, records: list[RunRecord], args) -> dict:
    seconds = statistics.median(r.seconds for r in records)
    ess = statistics.median(r.ess for r in records)
    ess_per_second = statistics.median(r.ess / r.seconds for r in records)
    steps = statistics.median(r.steps_per_draw for r in records)
    # An estimate of the gradients of the whole run: only the sampling steps are recorded,
    # so the warm-up is counted at the same rate per step.
    gradients = steps * args.chains * (args.warmup + args.samples)
    return {
        "name": name,
        "seconds": seconds,
        "ess": ess,
        "ess_per_second": ess_per_second,
        "steps": steps,
        "ess_per_1000_gradients": 1000.0 * ess / gradients,
        "seconds_per_1000_gradients": 1000.0 * seconds / gradients,
        "divergences": statistics.median(r.divergences for r in records),
    }


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'sampler':<20} {'wall s':>8} {'min bulk ESS':>13} {'ESS/s':>8} {'steps/draw':>11} "
        f"{'ESS/1k grad':>12} {'s/1k grad':>10} {'divergent':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['name']:<20} {row['seconds']:>8.2f} {row['ess']:>13.0f} {row['ess_per_second']:>8.1f} "
            f"{row['steps']:>11.1f} {row['ess_per_1000_gradients']:>12.2f} {row['seconds_per_1000_gradients']:>10.4f} "
            f"{row['divergences']:>10.0f}"
        )


def breakdown(args, program, data, starts, key) -> None:
    """Split probnn's wall time into warm-up and sampling by rerunning sampling alone."""
    _, result = run_probnn(program, key, data, starts)
    sampling_only = SamplerSettings(
        num_warmup=0,
        num_samples=args.samples,
        max_num_doublings=args.max_tree_depth,
        target_acceptance_rate=args.target_accept,
    )

    def run(key, X, y, mask, positions, adaptation):
        target = NumpyroTarget(bnn_regression, (X, y, mask, PRIOR), {})
        return sample(key, target.logdensity, positions, sampling_only, adaptation)

    sampling_program = jax.jit(run)
    jax.block_until_ready(sampling_program(key, *data, result.final_positions, result.adaptation))
    start = time.perf_counter()
    again = jax.block_until_ready(sampling_program(jax.random.fold_in(key, 1), *data, result.final_positions, result.adaptation))
    seconds = time.perf_counter() - start
    steps = np.asarray(again.num_integration_steps)
    # In lockstep every chain waits for the longest trajectory of each draw.
    lockstep = float(np.mean(np.max(steps, axis=0)) / np.mean(steps))
    print(
        f"probnn sampling phase alone ({args.samples} draws): {seconds:.2f} s, {np.mean(steps):.1f} steps per draw, "
        f"lockstep factor (longest chain / mean chain per draw) {lockstep:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--max-tree-depth", type=int, default=10)
    parser.add_argument("--target-accept", type=float, default=0.8)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per sampler after the compiling run")
    parser.add_argument("--breakdown", action="store_true", help="also time probnn's sampling phase alone")
    args = parser.parse_args()

    print(describe_machine())
    print(
        f"model: 1-10-1 tanh BNN, {NUM_POINTS} points; {args.chains} chains x ({args.warmup} warm-up + "
        f"{args.samples} draws), target acceptance {args.target_accept}, max tree depth {args.max_tree_depth}"
    )
    data = make_data()
    keys = [jax.random.key(seed) for seed in range(args.repeats + 1)]

    settings = SamplerSettings(
        num_warmup=args.warmup,
        num_samples=args.samples,
        max_num_doublings=args.max_tree_depth,
        target_acceptance_rate=args.target_accept,
    )
    target = NumpyroTarget(bnn_regression, (*data, PRIOR), {})
    starts = initial_positions(target, jax.random.key(100), args.chains)
    program = probnn_program(settings)
    start = time.perf_counter()
    run_probnn(program, keys[0], data, starts)
    print(f"probnn first run (compilation included): {time.perf_counter() - start:.1f} s")
    records = {"probnn": [run_probnn(program, key, data, starts)[0] for key in keys[1:]]}

    for method in ("vectorized", "sequential"):
        mcmc = numpyro_sampler(args, method)
        start = time.perf_counter()
        run_numpyro(mcmc, keys[0], data)
        print(f"numpyro {method} first run (compilation included): {time.perf_counter() - start:.1f} s")
        records[f"numpyro {method}"] = [run_numpyro(mcmc, key, data) for key in keys[1:]]

    rows = [summarize_runs(name, runs, args) for name, runs in records.items()]
    print()
    print_table(rows)
    print()
    for name, runs in records.items():
        print(f"ESS/s of each timed run, {name}: " + ", ".join(f"{r.ess / r.seconds:.1f}" for r in runs))
    ours = rows[0]["ess_per_second"]
    for row in rows[1:]:
        print(f"ESS/s ratio probnn / {row['name']}: {ours / row['ess_per_second']:.2f} (target >= 1.3)")
    if args.breakdown:
        breakdown(args, program, data, starts, keys[-1])


if __name__ == "__main__":
    main()
