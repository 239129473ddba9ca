"""A trained neural process: the model, its configuration, its limits, and its files.

A checkpoint is a folder with two files, in the format of the PFN checkpoints.
``model.eqx`` contains the arrays written by :func:`equinox.tree_serialise_leaves`.
``config.json`` contains ``"format": "probnn-np-1"``, the :class:`NPConfig`, the task
the model was trained on, its limits (input range and maximum number of points) and how
it was trained. Loading reads the JSON first, builds an empty model of that shape and fills
it from the arrays, so no code is unpickled.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp

from probnn.np.models import CANP, CNP, MPNP, NPConfig, build_model
from probnn.priors.np_tasks import NP_X_RANGE
from probnn.training import atomic_write

__all__ = ["CHECKPOINT_FORMAT", "NeuralProcessNetwork", "SHIPPED_NP_CHECKPOINTS", "load_np", "save_np"]

MODEL_FILE = "model.eqx"
CONFIG_FILE = "config.json"
CHECKPOINT_FORMAT = "probnn-np-1"

#: Checkpoints that ship inside the package (``probnn/np/checkpoints/NAME``), by name. All
#: three had the same budget: 5,000 steps of 50 tasks from the ``rbf`` family.
SHIPPED_NP_CHECKPOINTS: dict[str, str] = {
    "cnp-rbf": "conditional neural process trained on 1-d RBF Gaussian process tasks",
    "canp-rbf": "conditional attentive neural process trained on 1-d RBF Gaussian process tasks",
    "mpnp-rbf": "martingale posterior neural process (K = 5 pseudo sets of 10 points) trained on 1-d RBF GP tasks",
}

#: Limits of the task families every model here is trained on.
DEFAULT_LIMITS = {"x_range": list(NP_X_RANGE), "max_points": 50}


class NeuralProcessNetwork(eqx.Module):
    """A neural process ready to predict: the model, its configuration and its record.

    Parameters
    ----------
    model : CNP, CANP or MPNP
    config : NPConfig
    info : str
        JSON text of the task, limits and training record, kept with the checkpoint.
    """

    model: CNP | CANP | MPNP
    config: NPConfig = eqx.field(static=True)
    info: str = eqx.field(static=True, default="{}")

    @property
    def metadata(self) -> dict:
        return json.loads(self.info)

    @property
    def limits(self) -> dict:
        """Input range ``x_range`` and ``max_points`` the model was trained for."""
        return {**DEFAULT_LIMITS, **self.metadata.get("limits", {})}

    @property
    def dtype(self):
        return jax.tree_util.tree_leaves(eqx.filter(self.model, eqx.is_inexact_array))[0].dtype


def save_np(network: NeuralProcessNetwork, directory: str | os.PathLike) -> Path:
    """Write ``model.eqx`` and ``config.json`` into ``directory`` (created if missing).

    Each file is written to a temporary name and renamed, so an interrupted save never
    leaves a truncated checkpoint behind.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    metadata = network.metadata
    record = {
        "format": CHECKPOINT_FORMAT,
        "config": network.config.to_dict(),
        **metadata,
        "limits": {**DEFAULT_LIMITS, **metadata.get("limits", {})},
    }
    atomic_write(directory / CONFIG_FILE, lambda f: f.write(json.dumps(record, indent=2).encode()))
    atomic_write(directory / MODEL_FILE, lambda f: eqx.tree_serialise_leaves(f, network))
    return directory


def skeleton(config: NPConfig, info: str = "{}") -> NeuralProcessNetwork:
    """Build a network of the right shapes, to be filled from a file."""
    model = eqx.filter_eval_shape(build_model, config, jax.random.key(0))
    model = jax.tree_util.tree_map(
        lambda leaf: jnp.zeros(leaf.shape, leaf.dtype) if isinstance(leaf, jax.ShapeDtypeStruct) else leaf,
        model,
    )
    return NeuralProcessNetwork(model, config, info)


def checkpoint_path(name_or_path: str | os.PathLike) -> Path:
    """Folder of a shipped checkpoint by name, or the given folder."""
    name = str(name_or_path)
    # Only a bare name can refer to a shipped checkpoint; a path with separators is a folder.
    if name and Path(name).name == name:
        shipped = Path(str(resources.files("probnn.np").joinpath("checkpoints", name)))
        if name in SHIPPED_NP_CHECKPOINTS or (shipped / CONFIG_FILE).is_file():
            return shipped
    path = Path(name_or_path)
    if not (path / CONFIG_FILE).is_file() or not (path / MODEL_FILE).is_file():
        shipped_names = ", ".join(SHIPPED_NP_CHECKPOINTS) or "none yet"
        raise ValueError(
            f"{str(name_or_path)!r} is neither a shipped neural process checkpoint ({shipped_names}) nor a "
            f"folder containing {CONFIG_FILE} and {MODEL_FILE}; pass the folder that train_np wrote."
        )
    return path


def load_np(name_or_path: str | os.PathLike) -> NeuralProcessNetwork:
    """Load a checkpoint from ``probnn/np/checkpoints/NAME`` or from a checkpoint folder.

    The shipped folder is looked up first, so a shipped name wins over a local folder of
    the same name.
    """
    path = checkpoint_path(name_or_path)
    record = json.loads((path / CONFIG_FILE).read_text())
    if record.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path / CONFIG_FILE} is not a probnn neural process checkpoint "
            f"(format {record.get('format')!r}, expected {CHECKPOINT_FORMAT!r})."
        )
    config = NPConfig.from_dict(record["config"])
    info = {k: v for k, v in record.items() if k not in ("format", "config")}
    # The parameters are float32 on disk whatever the global precision.
    with jax.enable_x64(False):
        template = skeleton(config, json.dumps(info, sort_keys=True))
        with open(path / MODEL_FILE, "rb") as handle:
            return eqx.tree_deserialise_leaves(handle, template)
