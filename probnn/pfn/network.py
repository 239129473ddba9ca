"""A trained PFN: the transformer, its bucket borders, its limits, and its files.

A checkpoint is a folder with two files: ``model.eqx``, the arrays written by
:func:`equinox.tree_serialise_leaves`, and ``config.json``, the :class:`PFNConfig`, the
task prior, the limits the network was trained for and how it was trained. Loading reads
the JSON first, builds an empty network of that shape and fills it from the arrays, so no
code is unpickled.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from probnn.pfn.bar import BarDistribution
from probnn.pfn.model import PFNConfig, PFNTransformer, standardize_targets
from probnn.training import atomic_write

__all__ = ["PriorFittedNetwork", "SHIPPED_CHECKPOINTS", "load_pfn", "save_pfn"]

MODEL_FILE = "model.eqx"
CONFIG_FILE = "config.json"

#: Checkpoints that ship inside the package, by name.
SHIPPED_CHECKPOINTS = {
    "gp-rbf-1d": "1-d GP, RBF kernel, l = 0.2, v = 1, noise 0.01",
    "gp-hyper": "GP with hyperpriors on ARD l, v and noise",
    "gp-hyper-bo": "gp-hyper fine-tuned to predict the noise-free function, noise 1e-6 to 1e-2 (for BO)",
}


class PriorFittedNetwork(eqx.Module):
    """A PFN ready to predict: network, bucket borders and configuration.

    Parameters
    ----------
    network : PFNTransformer
    borders : array of shape (num_buckets + 1,)
    config : PFNConfig
    info : str
        JSON text of the prior and training record, kept with the checkpoint.

    Examples
    --------
    >>> pfn = load_pfn("gp-rbf-1d")  # doctest: +SKIP
    >>> predictive = pfn.predict(x_train, y_train, x_test)  # doctest: +SKIP
    """

    network: PFNTransformer
    borders: Float[Array, " K1"]
    config: PFNConfig = eqx.field(static=True)
    info: str = eqx.field(static=True, default="{}")

    @property
    def metadata(self) -> dict:
        return json.loads(self.info)

    @property
    def predicts_latent(self) -> bool:
        """Whether the network predicts the noise-free function (trained on ``latent_targets``) rather than noisy targets."""
        return bool(self.metadata.get("prior", {}).get("latent_targets", False))

    def check_data(self, x_train, y_train, x_test) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validate shapes and the trained limits; return float arrays ``(n, d), (n,), (m, d)``."""
        x_train = _as_inputs(x_train, "x_train")
        # Without queries (a model being fitted), only the training data are checked.
        x_test = x_train[:0] if x_test is None else _as_inputs(x_test, "x_test")
        y_train = np.asarray(y_train, dtype=float)
        if y_train.ndim != 1 or y_train.shape[0] != x_train.shape[0]:
            raise ValueError(
                f"y_train must be 1-d with one target per row of x_train ({x_train.shape[0]}); got shape {y_train.shape}."
            )
        if not np.all(np.isfinite(y_train)):
            raise ValueError("y_train contains NaN or infinite values; drop those rows first.")
        d = x_train.shape[1]
        if x_test.shape[1] != d:
            raise ValueError(f"x_test has {x_test.shape[1]} features but x_train has {d}.")
        if d > self.config.max_features:
            raise ValueError(
                f"The data have {d} features but this PFN was trained for at most max_features = "
                f"{self.config.max_features}; use a checkpoint trained with more features."
            )
        if x_train.shape[0] > self.config.max_train_points:
            raise ValueError(
                f"{x_train.shape[0]} training points exceed this PFN's limit max_train_points = "
                f"{self.config.max_train_points}; pass a subset or train a PFN for more points."
            )
        return x_train, y_train, x_test

    def predict(self, x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike) -> BarDistribution:
        """Posterior predictive of the targets at ``x_test`` given the training data.

        Inputs are expected in the unit cube, the domain of the task priors. Returns a
        :class:`BarDistribution` with batch shape ``(m,)``.
        """
        x_train, y_train, x_test = self.check_data(x_train, y_train, x_test)
        dtype = self.borders.dtype
        return _predict(self, jnp.asarray(x_train, dtype), jnp.asarray(y_train, dtype), jnp.asarray(x_test, dtype))


def _as_inputs(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d) or (n,), got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return x


def pad_features(x: Array, max_features: int) -> Array:
    return jnp.pad(x, ((0, 0), (0, max_features - x.shape[-1])))


@eqx.filter_jit
def _predict(pfn: PriorFittedNetwork, x_train, y_train, x_test) -> BarDistribution:
    logits, loc, scale = predict_logits(pfn, x_train, y_train, x_test)
    return BarDistribution(pfn.borders, logits).affine(loc, scale)


def predict_logits(pfn: PriorFittedNetwork, x_train, y_train, x_test, num_train=None):
    """Query logits ``(m, K)`` and the affine map ``(loc, scale)`` back to the user's units.

    With ``num_train`` given, only the first ``num_train`` rows of ``x_train`` and
    ``y_train`` are training points and the rest are padding that no token attends to, so
    a padded training set of fixed shape serves every size without recompiling.
    """
    rows, d = x_train.shape
    config = pfn.config
    x = pad_features(jnp.concatenate([x_train, x_test]), config.max_features)
    count = rows if num_train is None else num_train
    train_mask = jnp.arange(x.shape[0]) < count
    y = jnp.concatenate([y_train, jnp.zeros(x_test.shape[0], y_train.dtype)])
    if config.normalize_y:
        loc, scale = standardize_targets(y, train_mask)
    else:
        loc, scale = jnp.zeros((), y.dtype), jnp.ones((), y.dtype)
    logits = pfn.network(x, (y - loc) / scale, train_mask, d)
    return logits[rows:], loc, scale


def save_pfn(pfn: PriorFittedNetwork, directory: str | os.PathLike) -> Path:
    """Write ``model.eqx`` and ``config.json`` into ``directory`` (created if missing).

    Each file is written to a temporary name and renamed, so an interrupted save never
    leaves a truncated checkpoint behind.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    record = {
        "format": "probnn-pfn-1",
        "config": pfn.config.to_dict(),
        "num_buckets": int(pfn.borders.shape[0] - 1),
        **pfn.metadata,
    }
    atomic_write(directory / CONFIG_FILE, lambda f: f.write(json.dumps(record, indent=2).encode()))
    atomic_write(directory / MODEL_FILE, lambda f: eqx.tree_serialise_leaves(f, pfn))
    return directory


def skeleton(config: PFNConfig, info: str = "{}") -> PriorFittedNetwork:
    """Build a PFN of the right shapes, to be filled from a file."""
    network = eqx.filter_eval_shape(PFNTransformer, config, jax.random.key(0))
    network = jax.tree_util.tree_map(
        lambda leaf: jnp.zeros(leaf.shape, leaf.dtype) if isinstance(leaf, jax.ShapeDtypeStruct) else leaf,
        network,
    )
    return PriorFittedNetwork(network, jnp.zeros(config.num_buckets + 1, jnp.float32), config, info)


def checkpoint_path(name_or_path: str | os.PathLike) -> Path:
    """Folder of a shipped checkpoint by name, or the given folder."""
    if str(name_or_path) in SHIPPED_CHECKPOINTS:
        return Path(str(resources.files("probnn.pfn").joinpath("checkpoints", str(name_or_path))))
    path = Path(name_or_path)
    if not (path / CONFIG_FILE).is_file() or not (path / MODEL_FILE).is_file():
        raise ValueError(
            f"{str(name_or_path)!r} is neither a shipped PFN ({', '.join(SHIPPED_CHECKPOINTS)}) nor a folder "
            f"holding {CONFIG_FILE} and {MODEL_FILE}."
        )
    return path


def load_pfn(name_or_path: str | os.PathLike = "gp-hyper") -> PriorFittedNetwork:
    """Load a shipped checkpoint by name (``gp-rbf-1d``, ``gp-hyper``, ``gp-hyper-bo``) or a checkpoint folder."""
    path = checkpoint_path(name_or_path)
    record = json.loads((path / CONFIG_FILE).read_text())
    if record.get("format") != "probnn-pfn-1":
        raise ValueError(f"{path / CONFIG_FILE} is not a probnn PFN checkpoint (format {record.get('format')!r}).")
    config = PFNConfig.from_dict(record["config"])
    info = {k: v for k, v in record.items() if k not in ("format", "config", "num_buckets")}
    # The parameters are float32 on disk whatever the global precision.
    with jax.enable_x64(False):
        template = skeleton(config, json.dumps(info, sort_keys=True))
        with open(path / MODEL_FILE, "rb") as handle:
            return eqx.tree_deserialise_leaves(handle, template)
