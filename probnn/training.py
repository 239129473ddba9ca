"""The resumable training loop shared by the PFN and neural process trainers.

A trainer supplies a jitted step ``(state, step_index) -> (state, loss)`` and a function
that saves its state; :func:`run_training` calls the step until the schedule ends or the
time budget runs out. Every 50 steps it averages the loss, refuses a non-finite one,
appends a row to ``history.csv`` and updates the progress bar. It saves the state every
``checkpoint_every`` steps and once more at the end. Files are replaced atomically, so an
interrupted run keeps its last complete state.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["atomic_write", "hardware_description", "run_training"]

logger = logging.getLogger(__name__)

HISTORY_FILE = "history.csv"

#: Steps between loss averages, history rows and progress-bar updates.
LOG_EVERY = 50


def atomic_write(path: Path, write: Callable) -> None:
    """Write ``path`` through ``write(handle)`` into a temporary file, then rename it over ``path``."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def hardware_description() -> str:
    """Describe the JAX devices, the CPU core count and the machine type, for training records."""
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    return f"{len(devices)} x {', '.join(kinds)} ({jax.default_backend()}), {os.cpu_count()} CPU cores, {platform.machine()}"


def run_training(
    step: Callable[[Any, int], tuple[Any, jax.Array]],
    state: Any,
    *,
    out: Path,
    label: str,
    start_step: int,
    total_steps: int,
    elapsed: float,
    checkpoint_every: int,
    save_state: Callable[[Any, int, float], None],
    max_minutes: float | None = None,
    progress: bool = True,
    after_step: Callable[[Any, int, float], None] | None = None,
) -> tuple[Any, int, float]:
    """Run ``step`` from ``start_step`` to ``total_steps``; return ``(state, steps done, seconds)``.

    Parameters
    ----------
    step : callable
        ``step(state, step_index) -> (state, loss)``.
    state : pytree
        What ``step`` advances (network and optimizer state).
    out : Path
        Training folder; ``history.csv`` is appended there.
    label : str
        Name of the model in the progress bar and in messages ("PFN", "Neural process").
    start_step, total_steps : int
    elapsed : float
        Seconds spent before ``start_step`` (by an earlier run that this one resumes).
    checkpoint_every : int
    save_state : callable
        ``save_state(state, steps_done, seconds)``, called every ``checkpoint_every``
        steps and at the end.
    max_minutes : float, optional
        Stop after this much wall time, counting ``elapsed``.
    progress : bool
    after_step : callable, optional
        ``after_step(state, steps_done, seconds)`` after every step (snapshots).
    """
    history = open(out / HISTORY_FILE, "a", buffering=1)
    if start_step == 0:
        history.write("step,seconds,loss\n")
    window: list[jax.Array] = []
    clock = time.perf_counter()
    step_index = start_step
    try:
        with _Progress(label, progress, total_steps, start_step) as bar:
            while step_index < total_steps:
                state, loss = step(state, step_index)
                step_index += 1
                window.append(loss)
                if step_index % LOG_EVERY == 0 or step_index == total_steps:
                    mean_loss = float(jnp.mean(jnp.stack(window)))
                    window = []
                    if not math.isfinite(mean_loss):
                        raise FloatingPointError(
                            f"{label} training loss became {mean_loss} at step {step_index}; lower learning_rate "
                            f"or clip_norm. The last saved state in {out} is kept."
                        )
                    seconds = elapsed + time.perf_counter() - clock
                    history.write(f"{step_index},{seconds:.2f},{mean_loss:.5f}\n")
                    bar.update(step_index, mean_loss)
                seconds = elapsed + time.perf_counter() - clock
                if step_index % checkpoint_every == 0:
                    save_state(state, step_index, seconds)
                if after_step is not None:
                    after_step(state, step_index, seconds)
                if max_minutes is not None and seconds > 60.0 * max_minutes:
                    logger.info("Stopping %s training after %.1f minutes at step %d.", label, seconds / 60, step_index)
                    break
    finally:
        history.close()
    seconds = elapsed + time.perf_counter() - clock
    save_state(state, step_index, seconds)
    return state, step_index, seconds


class _Progress:
    """A rich progress bar over training steps showing the running loss, or nothing."""

    def __init__(self, label: str, enabled: bool, total: int, completed: int):
        self.label = label
        self.enabled = enabled
        self.total = total
        self.completed = completed
        self.progress = None
        self.task = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn(f"{self.label} training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=self.total, completed=self.completed, loss="-")
        return self

    def update(self, completed: int, loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=completed, loss=f"{loss:.4f}")

    def __exit__(self, *exc_info):
        if self.progress is not None:
            self.progress.stop()
        return False
