r"""Training a PFN on datasets drawn from a task prior.

Each step draws a fresh batch of datasets inside the jitted step, with no data loader
and no Python between steps. It splits every dataset at a random number of training
points and minimises the bar distribution's negative log density of the held-out targets,

.. math::

    \mathcal{L}(\theta) = -\mathbb{E}_{D \sim p(D)}\,
    \frac{1}{|D_{\text{test}}|}\sum_{(x, y) \in D_{\text{test}}} \log q_\theta(y \mid x, D_{\text{train}}),

whose minimiser is the prior's posterior predictive (Mueller et al., 2022, section 3).
Where the prior also returns the noise-free values ``f`` (``latent_targets=True``), the
held-out target is ``f`` rather than ``y``, and the minimiser is the posterior of the
function at the query inputs, given noisy training targets.
With several devices the datasets of a batch are split over them (data parallel, see
:mod:`probnn.sharding`).
The optimizer is optax's AdamW with linear warm-up, cosine decay and global-norm gradient
clipping.

A training folder contains:

* ``training.eqx`` (network and optimizer state) and ``training.json`` (settings and the
  step reached), rewritten atomically every ``checkpoint_every`` steps;
* ``history.csv`` (step, seconds, mean loss);
* at the end, the checkpoint files of :func:`probnn.pfn.save_pfn`.

Calling :func:`train_pfn` again on the same folder resumes from the last saved step with
the same data stream.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from probnn.pfn.bar import BarDistribution, bar_borders
from probnn.pfn.model import PFNConfig, PFNTransformer, count_parameters, standardize_targets
from probnn.pfn.network import PriorFittedNetwork, save_pfn
from probnn.priors.tasks import TaskPrior
from probnn.sharding import shard_batch
from probnn.training import atomic_write, hardware_description, run_training

__all__ = ["TrainSettings", "pfn_loss", "prior_borders", "train_pfn"]

logger = logging.getLogger(__name__)

STATE_FILE = "training.eqx"
SETTINGS_FILE = "training.json"


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of :func:`train_pfn`.

    Attributes
    ----------
    steps : int
        Optimizer steps; the cosine schedule ends at the last one.
    batch_size : int
        Datasets per step.
    num_points : int or None
        Points per dataset (training plus held-out); defaults to ``max_train_points + 10``.
    min_train_points : int
        Minimum number of training points in a split; the maximum is the config's
        ``max_train_points``.
    learning_rate, warmup_steps, weight_decay, clip_norm : float, int, float, float
        AdamW peak rate, linear warm-up length, decoupled weight decay, gradient-norm clip.
    seed : int
        Seed of the initialisation and of the data stream.
    """

    steps: int = 10000
    batch_size: int = 64
    num_points: int | None = None
    min_train_points: int = 1
    learning_rate: float = 1e-3
    warmup_steps: int = 500
    weight_decay: float = 1e-4
    clip_norm: float = 1.0
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.min_train_points < 0:
            raise ValueError(f"min_train_points must be >= 0, got {self.min_train_points}.")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}.")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}.")

    def points(self, config: PFNConfig) -> int:
        num_points = self.num_points if self.num_points is not None else config.max_train_points + 10
        if num_points <= config.max_train_points:
            raise ValueError(
                f"num_points ({num_points}) must exceed max_train_points ({config.max_train_points}) so that "
                "every split keeps held-out points."
            )
        if self.min_train_points > config.max_train_points:
            raise ValueError(
                f"min_train_points ({self.min_train_points}) exceeds max_train_points ({config.max_train_points})."
            )
        return num_points

    def optimizer(self) -> optax.GradientTransformation:
        warmup = min(self.warmup_steps, self.steps - 1)
        schedule = optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=self.learning_rate,
            warmup_steps=warmup,
            decay_steps=self.steps,
            end_value=0.0,
        )
        return optax.chain(
            optax.clip_by_global_norm(self.clip_norm),
            optax.adamw(schedule, weight_decay=self.weight_decay),
        )


def _split_masks(key, batch_size, num_points, low, high):
    counts = jax.random.randint(key, (batch_size,), low, high + 1)
    return jnp.arange(num_points)[None, :] < counts[:, None]


def pfn_loss(network: PFNTransformer, borders, config: PFNConfig, batch, train_mask) -> jax.Array:
    """Mean negative log density of the held-out targets, in the network's target units."""

    def one(x, y, target, mask, num_features):
        if config.normalize_y:
            loc, scale = standardize_targets(y, mask)
            y, target = (y - loc) / scale, (target - loc) / scale
        logits = network(x, y, mask, num_features)
        return -BarDistribution(borders, logits).log_prob(target)

    targets = batch.y if batch.f is None else batch.f
    nll = jax.vmap(one)(batch.x, batch.y, targets, train_mask, batch.num_features)
    held_out = (~train_mask).astype(nll.dtype)
    return jnp.sum(nll * held_out) / jnp.sum(held_out)


_BORDER_BATCH = 256


@eqx.filter_jit
def _held_out_targets(key, prior, config, settings, num_points):
    key_data, key_split = jax.random.split(key)
    batch = prior.sample(key_data, _BORDER_BATCH, num_points)
    mask = _split_masks(key_split, _BORDER_BATCH, num_points, settings.min_train_points, config.max_train_points)
    y = batch.y if batch.f is None else batch.f
    if config.normalize_y:
        loc, scale = jax.vmap(standardize_targets)(batch.y, mask)
        y = (y - loc[:, None]) / scale[:, None]
    return y, ~mask


def prior_borders(
    prior: TaskPrior, config: PFNConfig, settings: TrainSettings, key, num_samples: int = 200_000
) -> np.ndarray:
    """Bucket borders from held-out targets of the prior, as the network will see them."""
    num_points = settings.points(config)
    values = []
    count = 0
    for draw_key in jax.random.split(key, max(1, -(-num_samples // (_BORDER_BATCH * 10)))):
        y, held_out = _held_out_targets(draw_key, prior, config, settings, num_points)
        chosen = np.asarray(y)[np.asarray(held_out)]
        values.append(chosen)
        count += chosen.size
        if count >= num_samples:
            break
    return bar_borders(np.concatenate(values)[:num_samples], config.num_buckets)


@eqx.filter_jit
def _train_step(network, borders, opt_state, key, prior, config, settings):
    # prior, config and settings are static (hashable), so repeated and resumed runs with the
    # same settings reuse one compiled step.
    num_points = settings.points(config)
    key_data, key_split = jax.random.split(key)
    batch = prior.sample(key_data, settings.batch_size, num_points)
    mask = _split_masks(key_split, settings.batch_size, num_points, settings.min_train_points, config.max_train_points)
    # Data parallel: with several devices each one gets a share of the datasets, and XLA
    # sums the gradients across them. On one device this changes nothing.
    batch, mask = shard_batch((batch, mask))
    loss, grads = eqx.filter_value_and_grad(pfn_loss)(network, borders, config, batch, mask)
    updates, opt_state = settings.optimizer().update(grads, opt_state, eqx.filter(network, eqx.is_inexact_array))
    return eqx.apply_updates(network, updates), opt_state, loss


def train_pfn(
    prior: TaskPrior,
    config: PFNConfig,
    settings: TrainSettings,
    out: str | os.PathLike,
    *,
    prior_name: str | None = None,
    checkpoint_every: int = 500,
    snapshot_every: int | None = None,
    max_minutes: float | None = None,
    progress: bool = True,
    init: PriorFittedNetwork | None = None,
    init_name: str | None = None,
) -> PriorFittedNetwork:
    """Train a PFN on ``prior`` and write its checkpoint to ``out``.

    Parameters
    ----------
    prior : TaskPrior
        Its ``max_features`` must equal ``config.max_features``.
    config : PFNConfig
    settings : TrainSettings
    out : path
        Training folder. If it contains a training state with the same settings, training
        resumes from it. A state with other settings raises an error and is kept.
    prior_name : str, optional
        Name recorded in the checkpoint (``probnn.priors.TASK_PRIORS`` key).
    checkpoint_every : int
        Steps between saves of the training state.
    snapshot_every : int, optional
        Also keep the network every this many steps under ``out/snapshots/step-N``, to
        measure quality against training time.
    max_minutes : float, optional
        Stop, save and return after this much wall time (the schedule is not shortened).
    progress : bool
        Draw a progress bar with the running loss.
    init : PriorFittedNetwork, optional
        Start from this network and its bucket borders instead of a random initialisation
        (fine-tuning on a related prior). Its config must equal ``config``. The checkpoint
        records ``init_name`` and the seconds its own training took.
    init_name : str, optional
        Name of ``init`` for the record (a shipped checkpoint name or a folder).

    Returns
    -------
    PriorFittedNetwork

    Notes
    -----
    Training runs in float32 even where float64 is enabled globally (as the ``probnn``
    command does): the network's parameters and the drawn datasets are float32.
    """
    with jax.enable_x64(False):
        return _train(
            prior, config, settings, out, prior_name, checkpoint_every, snapshot_every, max_minutes, progress, init,
            init_name,
        )


def _train(
    prior, config, settings, out, prior_name, checkpoint_every, snapshot_every, max_minutes, progress, init, init_name
):
    if init is not None and init.config != config:
        raise ValueError(
            f"The initial network has config {init.config.to_dict()} but training asks for {config.to_dict()}; "
            "fine-tuning keeps the architecture, so pass the same config."
        )
    if prior.max_features != config.max_features:
        raise ValueError(
            f"The prior has max_features = {prior.max_features} but the config has {config.max_features}; make them equal."
        )
    settings.points(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "config": config.to_dict(),
        "settings": dataclasses.asdict(settings),
        "prior": prior.config(),
        "prior_name": prior_name,
    }
    if init is not None:
        # Kept in the record, so a resume with another starting network is refused.
        record["init"] = {
            "name": init_name,
            "seconds": init.metadata.get("training", {}).get("seconds"),
            "prior_name": init.metadata.get("prior_name"),
        }

    optimizer = settings.optimizer()
    key = jax.random.key(settings.seed)
    init_key, border_key, data_key = jax.random.split(key, 3)
    network = PFNTransformer(config, init_key) if init is None else init.network
    opt_state = optimizer.init(eqx.filter(network, eqx.is_inexact_array))
    start_step, elapsed = 0, 0.0

    settings_path = out / SETTINGS_FILE
    if settings_path.is_file():
        saved = json.loads(settings_path.read_text())
        if {k: saved.get(k) for k in record} != json.loads(json.dumps(record)):
            raise ValueError(
                f"{out} contains a training run with other settings; pass a new folder, or the same settings to resume."
            )
        borders = jnp.asarray(saved["borders"], jnp.float32)
        with open(out / STATE_FILE, "rb") as handle:
            network, opt_state = eqx.tree_deserialise_leaves(handle, (network, opt_state))
        start_step, elapsed = int(saved["step"]), float(saved["seconds"])
        logger.info("Resuming PFN training in %s at step %d.", out, start_step)
    elif init is not None:
        # Fine-tuning keeps the buckets the network's output layer was trained for.
        borders = jnp.asarray(init.borders, jnp.float32)
    else:
        borders = jnp.asarray(prior_borders(prior, config, settings, border_key), jnp.float32)

    def save_state(state, step_index: int, seconds: float) -> None:
        with_state = {**record, "step": step_index, "seconds": seconds, "borders": np.asarray(borders).tolist()}
        atomic_write(out / STATE_FILE, lambda f: eqx.tree_serialise_leaves(f, state))
        atomic_write(out / SETTINGS_FILE, lambda f: f.write(json.dumps(with_state).encode()))

    def finished_network(network, step_index: int, seconds: float) -> PriorFittedNetwork:
        info = {
            "prior_name": prior_name,
            "prior": record["prior"],
            **({"init": record["init"]} if "init" in record else {}),
            "limits": {"max_features": config.max_features, "max_train_points": config.max_train_points},
            "training": {
                **record["settings"],
                "steps_done": step_index,
                "seconds": round(seconds, 1),
                "hardware": hardware_description(),
                "parameters": count_parameters(network),
            },
        }
        return PriorFittedNetwork(network, borders, config, json.dumps(info, sort_keys=True))

    def step(state, step_index):
        network, opt_state = state
        network, opt_state, loss = _train_step(
            network, borders, opt_state, jax.random.fold_in(data_key, step_index), prior, config, settings
        )
        return (network, opt_state), loss

    def snapshot(state, step_index, seconds):
        if snapshot_every and step_index % snapshot_every == 0:
            save_pfn(finished_network(state[0], step_index, seconds), out / "snapshots" / f"step-{step_index}")

    (network, opt_state), step_index, seconds = run_training(
        step,
        (network, opt_state),
        out=out,
        label="PFN",
        start_step=start_step,
        total_steps=settings.steps,
        elapsed=elapsed,
        checkpoint_every=checkpoint_every,
        save_state=save_state,
        max_minutes=max_minutes,
        progress=progress,
        after_step=snapshot,
    )
    pfn = finished_network(network, step_index, seconds)
    save_pfn(pfn, out)
    return pfn
