"""Time to a posterior predictive: PFN against a GP fitted by marginal likelihood and NUTS on a BNN.

Datasets come from the PFN's own task prior: 50 training and 1,000 test points each. For
every dataset each method runs twice on the same data. The first run compiles and the
second is timed, so the figures are steady-state seconds; compilation is reported apart.

* ``pfn``: one forward pass of the checkpoint.
* ``gp-ml2``: a GP with an ARD RBF kernel whose hyperparameters maximise the marginal
  likelihood (L-BFGS, probnn's default restarts), then its predictive.
* ``nuts-S``: NUTS on the ``hmc`` surrogate's tanh BNN (2 x 50), 4 chains, ``S`` warm-up
  steps and ``S`` draws per chain, tree depth at most 8.

The test NLL per point of each method is reported beside its time, and the ratio of its
time to the PFN's. NUTS is "comparable" at the smallest budget whose NLL is within
``--tolerance`` nats of the PFN's.

Example::

    python benchmarks/pfn_speed.py --checkpoint gp-hyper --datasets 3 --out benchmarks/results/pfn_speed.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from probnn.bnn.hmc import HMCNetwork  # noqa: E402
from probnn.kernels import RBF  # noqa: E402
from probnn.pfn import load_pfn  # noqa: E402
from probnn.priors.tasks import make_task_prior  # noqa: E402
from probnn.processes import GaussianProcess  # noqa: E402
from probnn.samplers import SamplerSettings  # noqa: E402


def draw_dataset(prior, seed: int, num_train: int, num_test: int):
    with jax.enable_x64(False):
        batch = prior.sample(jax.random.key(seed), 1, num_train + num_test)
    d = int(batch.num_features[0])
    x = np.asarray(batch.x[0, :, :d], dtype=np.float64)
    y = np.asarray(batch.y[0], dtype=np.float64)
    return x[:num_train], y[:num_train], x[num_train:], y[num_train:]


def timed_twice(run):
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    start = time.perf_counter()
    nll = run()
    return first, time.perf_counter() - start, nll


def pfn_run(pfn, standardize, x, y, xt, yt):
    def run():
        loc, scale = (float(np.mean(y)), float(np.std(y))) if standardize else (0.0, 1.0)
        predictive = pfn.predict(x, (y - loc) / scale, xt).affine(loc, scale)
        return float(-jnp.mean(predictive.log_prob(jnp.asarray(yt, jnp.float32))))

    return timed_twice(run)


def gp_run(x, y, xt, yt, seed):
    def run():
        posterior = GaussianProcess(RBF().with_input_dim(x.shape[1])).fit(x, y, key=jax.random.key(seed))
        return float(-jnp.mean(posterior.predict(xt).log_prob(yt)))

    return timed_twice(run)


def nuts_run(x, y, xt, yt, draws, seed):
    settings = SamplerSettings(num_warmup=draws, num_samples=draws, max_num_doublings=8)

    def run():
        posterior = HMCNetwork(settings=settings, num_predictive_draws=min(256, 4 * draws)).fit(
            x, y, key=jax.random.key(seed)
        )
        return float(-jnp.mean(posterior.predict(xt).log_prob(yt)))

    return timed_twice(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="gp-hyper")
    parser.add_argument("--prior", default=None, help="task prior of the datasets (default: the checkpoint's)")
    parser.add_argument("--datasets", type=int, default=3)
    parser.add_argument("--train", type=int, default=50)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--nuts-draws", default="50,200,800", help="warm-up steps and draws per chain, comma-separated")
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    pfn = load_pfn(args.checkpoint)
    prior_name = args.prior or pfn.metadata["prior_name"]
    prior = make_task_prior(prior_name)
    # A prior with one known scale is read in raw units; otherwise targets are standardised
    # as probnn.pfn.PFNModel does.
    standardize = prior_name != "gp-rbf-1d"
    budgets = [int(v) for v in args.nuts_draws.split(",")]

    rows = []
    for index in range(args.datasets):
        x, y, xt, yt = draw_dataset(prior, args.seed + index, args.train, args.test)
        row = {"dataset": index, "features": x.shape[1]}
        for name, (first, seconds, nll) in [
            ("pfn", pfn_run(pfn, standardize, x, y, xt, yt)),
            ("gp-ml2", gp_run(x, y, xt, yt, index)),
        ] + [(f"nuts-{draws}", nuts_run(x, y, xt, yt, draws, index)) for draws in budgets]:
            row[name] = {"first_seconds": round(first, 4), "seconds": round(seconds, 4), "nll": round(nll, 4)}
            print(f"dataset {index} ({x.shape[1]} features) {name}: {seconds:.4f} s (first {first:.2f} s), NLL {nll:.4f}",
                  flush=True)
        rows.append(row)

    methods = ["pfn", "gp-ml2"] + [f"nuts-{draws}" for draws in budgets]
    summary = {}
    pfn_seconds = np.median([r["pfn"]["seconds"] for r in rows])
    pfn_nll = np.mean([r["pfn"]["nll"] for r in rows])
    for name in methods:
        seconds = float(np.median([r[name]["seconds"] for r in rows]))
        nll = float(np.mean([r[name]["nll"] for r in rows]))
        summary[name] = {"median_seconds": seconds, "mean_nll": nll, "time_ratio_to_pfn": seconds / pfn_seconds}
    comparable = next((f"nuts-{d}" for d in budgets if summary[f"nuts-{d}"]["mean_nll"] <= pfn_nll + args.tolerance), None)
    print("\n| method | median seconds | mean test NLL | time / PFN time |\n|---|---|---|---|")
    for name in methods:
        s = summary[name]
        print(f"| {name} | {s['median_seconds']:.4f} | {s['mean_nll']:.3f} | {s['time_ratio_to_pfn']:.0f} |")
    print(f"\nNUTS budget within {args.tolerance} nats of the PFN: {comparable or 'none of those run'}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"checkpoint": args.checkpoint, "prior": prior_name, "settings": vars(args) | {"out": str(args.out)},
                  "rows": rows, "summary": summary, "comparable_nuts": comparable}
        args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
