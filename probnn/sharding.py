"""Spread batch axes (chains, ensemble members, data blocks) over the available devices.

With more than one device in ``jax.devices()``, :func:`shard_batch` constrains the leading
axis of every array of a pytree to be split across the devices. XLA then partitions the
vmapped computation that follows (GSPMD), so each device runs its share of chains. With
one device, or a batch that the device count does not divide, it returns the pytree
unchanged and the program runs as before.

On one multi-core CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set before
JAX starts) gives ``N`` host devices. Across hosts, call ``jax.distributed.initialize()``
first in every process, as in ``examples/multihost_nuts.py``.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

#: Name of the mesh axis along which batches are split.
BATCH_AXIS = "batch"


def batch_sharding(batch_size: int) -> NamedSharding | None:
    """Return the sharding that splits a leading axis of ``batch_size`` over all devices, or ``None``.

    ``None`` means there is one device, or ``batch_size`` is not a multiple of the device
    count, so the batch stays on one device.
    """
    devices = jax.devices()
    if len(devices) < 2 or batch_size % len(devices) != 0:
        return None
    return NamedSharding(Mesh(np.array(devices), (BATCH_AXIS,)), PartitionSpec(BATCH_AXIS))


def shard_batch(tree):
    """Constrain the leading axis of every array leaf of ``tree`` to be split over the devices.

    Works inside and outside ``jit``. Leaves must share the leading axis length.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return tree
    sharding = batch_sharding(leaves[0].shape[0])
    if sharding is None:
        return tree
    return jax.tree.map(lambda leaf: jax.lax.with_sharding_constraint(leaf, sharding), tree)
