"""Training a neural process on tasks drawn from a task family.

Each step draws a fresh batch of tasks inside the jitted step, with no data loader and no
Python between steps, and takes one optimizer step on the objective of
:func:`probnn.np.losses.np_loss`. With several devices the tasks of a batch are split
over them (data parallel, see :mod:`probnn.sharding`). The optimizer is optax's AdamW
with linear warm-up, cosine decay and global-norm gradient clipping.

A training folder contains:

* ``training.eqx`` (model and optimizer state) and ``training.json`` (settings and the
  step reached), rewritten atomically every ``checkpoint_every`` steps;
* ``history.csv`` (step, seconds, mean loss);
* at the end, the checkpoint files of :func:`probnn.np.save_np`.

Calling :func:`train_np` again on the same folder resumes from the last saved step with
the same data stream: the batch of step ``i`` is drawn with ``fold_in(key, i)``.
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
import optax

from probnn.np.losses import np_loss
from probnn.np.models import MODEL_NAMES, NPConfig, build_model
from probnn.np.network import DEFAULT_LIMITS, NeuralProcessNetwork, save_np
from probnn.priors.np_tasks import NP_TASKS, NPTask, make_np_task
from probnn.sharding import shard_batch
from probnn.training import atomic_write, hardware_description, run_training

__all__ = ["NPTrainSettings", "train_np"]

logger = logging.getLogger(__name__)

STATE_FILE = "training.eqx"
SETTINGS_FILE = "training.json"


@dataclasses.dataclass(frozen=True)
class NPTrainSettings:
    """Optimisation settings of :func:`train_np`.

    The defaults are the usual values of the 1-d neural process benchmark (100,000 steps
    of 100 tasks at a peak learning rate of 5e-4 with cosine decay).

    Attributes
    ----------
    steps : int
        Optimizer steps; the cosine schedule ends at the last one.
    batch_size : int
        Tasks per step.
    learning_rate, warmup_steps, weight_decay, clip_norm : float, int, float, float
        AdamW peak rate, linear warm-up length, decoupled weight decay, gradient-norm clip.
    pseudo_weight : float
        Weight :math:`\\lambda` of the MPNP pseudo context term (unused by CNP and CANP).
    seed : int
        Seed of the initialisation and of the data stream.
    """

    steps: int = 100_000
    batch_size: int = 100
    learning_rate: float = 5e-4
    warmup_steps: int = 1000
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    pseudo_weight: float = 0.1
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be positive and finite, got {self.learning_rate!r}.")
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}.")
        if not (self.weight_decay >= 0 and self.clip_norm > 0):
            raise ValueError(
                f"weight_decay must be >= 0 and clip_norm > 0, got {self.weight_decay!r} and {self.clip_norm!r}."
            )
        if not (self.pseudo_weight >= 0 and math.isfinite(self.pseudo_weight)):
            raise ValueError(f"pseudo_weight must be >= 0 and finite, got {self.pseudo_weight!r}.")

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


@eqx.filter_jit
def _train_step(model, opt_state, key, task, settings):
    # task and settings are static (hashable), so repeated and resumed runs with the same
    # settings reuse one compiled step.
    key_data, key_model = jax.random.split(key)
    batch = task._sample(key_data, settings.batch_size)
    # Data parallel: with several devices each one gets a share of the tasks, and XLA
    # sums the gradients across them. On one device this changes nothing.
    batch = shard_batch(batch)
    (loss, _), grads = eqx.filter_value_and_grad(np_loss, has_aux=True)(model, batch, key_model, settings.pseudo_weight)
    updates, opt_state = settings.optimizer().update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
    return eqx.apply_updates(model, updates), opt_state, loss


def _count_parameters(model) -> int:
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)))


def _resolve(model_name, task):
    """Check the model and task arguments; return ``(config, task, task_name)``."""
    if isinstance(model_name, NPConfig):
        config = model_name
    elif model_name in MODEL_NAMES:
        config = NPConfig(model=model_name)
    else:
        raise ValueError(
            f"Unknown neural process model {model_name!r}; choose one of {', '.join(MODEL_NAMES)} or pass an NPConfig."
        )
    if isinstance(task, str):
        return config, make_np_task(task), task
    if isinstance(task, NPTask):
        return config, task, None
    raise ValueError(
        f"task must be a task name ({', '.join(NP_TASKS)}) or an NPTask, got {type(task).__name__}."
    )


def train_np(
    model_name: str | NPConfig,
    task: str | NPTask,
    settings: NPTrainSettings,
    out: str | os.PathLike,
    *,
    task_name: str | None = None,
    checkpoint_every: int = 1000,
    max_minutes: float | None = None,
    progress: bool = True,
) -> NeuralProcessNetwork:
    """Train a neural process on ``task`` and write its checkpoint to ``out``.

    Parameters
    ----------
    model_name : {"cnp", "canp", "mpnp"} or NPConfig
        A name builds the model with the default :class:`NPConfig` sizes.
    task : str or NPTask
        A name of :data:`probnn.priors.np_tasks.NP_TASKS` or a task family.
    settings : NPTrainSettings
    out : path
        Training folder. If it contains a training state with the same settings, training
        resumes from it. A state with other settings raises an error and is kept.
    task_name : str, optional
        Name recorded in the checkpoint; defaults to ``task`` when that is a name.
    checkpoint_every : int
        Steps between saves of the training state.
    max_minutes : float, optional
        Stop, save and return after this much wall time (the schedule is not shortened).
    progress : bool
        Draw a progress bar with the running loss.

    Returns
    -------
    NeuralProcessNetwork

    Notes
    -----
    Training runs in float32 even where float64 is enabled globally (as the ``probnn``
    command does): the model's parameters and the drawn tasks are float32.
    """
    config, task, default_name = _resolve(model_name, task)
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}.")
    if max_minutes is not None and not max_minutes > 0:
        raise ValueError(f"max_minutes must be positive, got {max_minutes!r}.")
    with jax.enable_x64(False):
        return _train(config, task, task_name or default_name, settings, Path(out), checkpoint_every, max_minutes,
                      progress)


def _train(config, task, task_name, settings, out, checkpoint_every, max_minutes, progress):
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "config": config.to_dict(),
        "settings": dataclasses.asdict(settings),
        "task": task.config(),
        "task_name": task_name,
    }

    optimizer = settings.optimizer()
    init_key, data_key = jax.random.split(jax.random.key(settings.seed))
    model = build_model(config, init_key)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    start_step, elapsed = 0, 0.0

    settings_path = out / SETTINGS_FILE
    if settings_path.is_file():
        saved = json.loads(settings_path.read_text())
        if {k: saved.get(k) for k in record} != json.loads(json.dumps(record)):
            raise ValueError(
                f"{out} contains a training run with other settings; pass a new folder, or the same settings to resume."
            )
        with open(out / STATE_FILE, "rb") as handle:
            model, opt_state = eqx.tree_deserialise_leaves(handle, (model, opt_state))
        start_step, elapsed = int(saved["step"]), float(saved["seconds"])
        logger.info("Resuming neural process training in %s at step %d.", out, start_step)

    def save_state(state, step_index: int, seconds: float) -> None:
        with_state = {**record, "step": step_index, "seconds": seconds}
        atomic_write(out / STATE_FILE, lambda f: eqx.tree_serialise_leaves(f, state))
        atomic_write(out / SETTINGS_FILE, lambda f: f.write(json.dumps(with_state).encode()))

    def finished_network(model, step_index: int, seconds: float) -> NeuralProcessNetwork:
        info = {
            "task_name": task_name,
            "task": record["task"],
            "limits": {**DEFAULT_LIMITS, "max_points": task.max_points},
            "training": {
                **record["settings"],
                "steps_done": step_index,
                "seconds": round(seconds, 1),
                "hardware": hardware_description(),
                "parameters": _count_parameters(model),
            },
        }
        return NeuralProcessNetwork(model, config, json.dumps(info, sort_keys=True))

    def step(state, step_index):
        model, opt_state = state
        model, opt_state, loss = _train_step(model, opt_state, jax.random.fold_in(data_key, step_index), task, settings)
        return (model, opt_state), loss

    (model, opt_state), step_index, seconds = run_training(
        step,
        (model, opt_state),
        out=out,
        label="Neural process",
        start_step=start_step,
        total_steps=settings.steps,
        elapsed=elapsed,
        checkpoint_every=checkpoint_every,
        save_state=save_state,
        max_minutes=max_minutes,
        progress=progress,
    )
    network = finished_network(model, step_index, seconds)
    save_np(network, out)
    return network
