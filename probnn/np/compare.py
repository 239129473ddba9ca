"""Several trained neural processes scored on the same held-out tasks of several task families.

Every network is scored on the same tasks (same family, seed and count). Besides each
network's mean log-likelihood per point, the comparison therefore reports paired
differences to a reference network: the mean over tasks of the per-task difference, and
its standard error.
Pairing removes the spread between tasks, which is most of the spread of each mean.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from probnn.np.evaluate import mean_and_se, per_task_log_likelihoods
from probnn.np.network import NeuralProcessNetwork, load_np
from probnn.priors.np_tasks import NP_TASKS

__all__ = ["compare_np", "comparison_table"]


def compare_np(
    networks: dict[str, NeuralProcessNetwork | str | os.PathLike],
    tasks: Sequence[str],
    *,
    num_tasks: int = 5000,
    seed: int = 12345,
    reference: str | None = None,
    progress: bool = True,
) -> dict:
    """Score each network on ``num_tasks`` tasks of each family in ``tasks``.

    Parameters
    ----------
    networks : dict
        Label to a loaded network, a shipped checkpoint name or a checkpoint folder.
    tasks : sequence of str
        Names of :data:`probnn.priors.np_tasks.NP_TASKS`.
    num_tasks, seed : int
        Held-out tasks per family, and their seed (the same for every network).
    reference : str, optional
        Label of the network the paired differences are taken against; by default none
        are computed.
    progress : bool
        Draw a rich progress bar over the (network, family) pairs.

    Returns
    -------
    dict
        ``scores[task][label]`` with ``context_ll``, ``context_ll_se``, ``target_ll`` and
        ``target_ll_se``. With a reference, ``differences[task][label]`` has the same
        four entries for the paired difference, label minus reference. ``models[label]``
        has the model name and training record of each network.
    """
    if not networks:
        raise ValueError("networks is empty; pass at least one {label: checkpoint} entry.")
    tasks = list(tasks)
    unknown = [name for name in tasks if name not in NP_TASKS]
    if not tasks or unknown:
        raise ValueError(f"tasks must be names from {', '.join(NP_TASKS)}; got {tasks!r}.")
    if reference is not None and reference not in networks:
        raise ValueError(f"reference {reference!r} is not one of the labels {', '.join(networks)}.")
    loaded = {
        label: network if isinstance(network, NeuralProcessNetwork) else load_np(network)
        for label, network in networks.items()
    }

    per_task: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    pairs = [(task, label) for task in tasks for label in loaded]
    with _progress(progress, len(pairs)) as advance:
        for task, label in pairs:
            per_task[task, label] = per_task_log_likelihoods(loaded[label], task, num_tasks, seed)
            advance(f"{label} on {task}")

    def summary(context, target):
        context_ll, context_se = mean_and_se(context)
        target_ll, target_se = mean_and_se(target)
        return {"context_ll": context_ll, "context_ll_se": context_se, "target_ll": target_ll,
                "target_ll_se": target_se}

    result = {
        "num_tasks": num_tasks,
        "seed": seed,
        "reference": reference,
        "models": {
            label: {"model": net.config.model, "config": net.config.to_dict(),
                    "task_name": net.metadata.get("task_name"), "training": net.metadata.get("training")}
            for label, net in loaded.items()
        },
        "scores": {task: {label: summary(*per_task[task, label]) for label in loaded} for task in tasks},
    }
    if reference is not None:
        result["differences"] = {
            task: {
                label: summary(*(a - b for a, b in zip(per_task[task, label], per_task[task, reference])))
                for label in loaded if label != reference
            }
            for task in tasks
        }
    return result


def comparison_table(result: dict) -> str:
    """Markdown table of a :func:`compare_np` result: one row per task family and network."""
    reference = result.get("reference")
    header = ["task", "model", "context LL", "target LL"]
    if reference is not None:
        header.append(f"target LL minus {reference} (paired)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for task, scores in result["scores"].items():
        for label, score in scores.items():
            row = [
                task,
                label,
                f"{score['context_ll']:.3f} ± {score['context_ll_se']:.3f}",
                f"{score['target_ll']:.3f} ± {score['target_ll_se']:.3f}",
            ]
            if reference is not None:
                difference = result["differences"][task].get(label)
                row.append(
                    "reference" if difference is None
                    else f"{difference['target_ll']:+.4f} ± {difference['target_ll_se']:.4f}"
                )
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


class _progress:
    """Context manager yielding ``advance(description)``; draws a rich bar when enabled."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.bar = enabled, total, None

    def __enter__(self):
        if not self.enabled:
            return lambda description: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self.bar.start()
        handle = self.bar.add_task("Scoring neural processes", total=self.total)
        return lambda description: self.bar.update(handle, advance=1, description=f"Scored {description}")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
