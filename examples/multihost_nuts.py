"""NUTS chains split over the devices of several processes (hosts) with jax.distributed.

One process per host runs this script. On one machine, two processes on loopback:

    python examples/multihost_nuts.py --process-id 0 --num-processes 2 &
    python examples/multihost_nuts.py --process-id 1 --num-processes 2

Each process contributes its local devices. Add
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` for two CPU devices each.
:func:`probnn.samplers.sample` splits the chains over all of them, and every process
prints the same R-hat at the end. With ``--num-processes 1`` (the default) it runs alone.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coordinator", default="127.0.0.1:61234", help="host:port of process 0")
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--chains-per-device", type=int, default=2)
    parser.add_argument("out", nargs="?", type=Path, default=None, help="folder for summary.json (optional)")
    args = parser.parse_args()

    if args.num_processes > 1:
        # CPU devices of different processes exchange data through gloo collectives.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    jax.config.update("jax_enable_x64", True)

    from jax.experimental import multihost_utils

    from probnn.samplers import SamplerSettings, sample

    def logdensity(position):
        # A correlated 2-d Gaussian: sd 1 and 3, correlation 0.8.
        covariance = jnp.array([[1.0, 2.4], [2.4, 9.0]])
        return -0.5 * position @ jnp.linalg.solve(covariance, position)

    num_chains = args.chains_per_device * len(jax.devices())
    start = jnp.zeros((num_chains, 2))
    settings = SamplerSettings(num_warmup=500, num_samples=1000, max_num_doublings=6)
    result = jax.jit(lambda key, p: sample(key, logdensity, p, settings))(jax.random.key(0), start)
    draws = np.asarray(multihost_utils.process_allgather(result.positions, tiled=True))

    import arviz as az

    r_hat = az.rhat(az.convert_to_dataset(draws)).to_array().values.max()
    sd = draws.reshape(-1, 2).std(axis=0)
    if args.out is not None and jax.process_index() == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        summary = {"chains": num_chains, "devices": len(jax.devices()), "sd": sd.tolist(), "max_r_hat": float(r_hat)}
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"process {jax.process_index()}: {num_chains} chains on {len(jax.devices())} devices "
        f"({len(jax.local_devices())} local); sd {sd.round(2).tolist()} "
        f"(exact [1.0, 3.0]); max R-hat {r_hat:.3f}"
    )


if __name__ == "__main__":
    main()
