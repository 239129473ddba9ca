"""``probnn np``: train neural processes (CNP, CANP, MPNP) on 1-d task families and evaluate them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from probnn.cli.common import check_positive, missing_command

logger = logging.getLogger("probnn.cli")


def add_np_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "np",
        help="Train a neural process (cnp, canp, mpnp) on a 1-d task family, or evaluate one.",
        description="Neural processes: conditional, attentive and martingale posterior neural processes.",
    )
    commands = parser.add_subparsers(title="np commands", dest="np_command")

    train = commands.add_parser(
        "train",
        help="Train a neural process on tasks drawn from a task family.",
        description=(
            "Train a neural process on tasks drawn from a task family. The folder --out keeps the training state; "
            "running the same command again resumes from the last saved step."
        ),
    )
    train.add_argument("--model", required=True, help="cnp, canp or mpnp")
    train.add_argument("--task", required=True, help="rbf, matern, periodic, t-noise or lotka-volterra")
    train.add_argument("--steps", type=int, required=True, help="optimizer steps (the cosine schedule ends there)")
    train.add_argument("--out", type=Path, required=True, help="training folder; the checkpoint is written there")
    train.add_argument("--batch-size", type=int, default=100, help="tasks per step (default 100)")
    train.add_argument("--learning-rate", type=float, default=5e-4, help="AdamW peak learning rate (default 5e-4)")
    train.add_argument("--warmup", type=int, default=1000, help="linear warm-up steps (default 1000)")
    train.add_argument("--hidden", type=int, default=128, help="width of every layer (default 128)")
    train.add_argument("--pseudo-sets", type=int, default=5, help="MPNP: pseudo context sets K (default 5)")
    train.add_argument("--pseudo-size", type=int, default=10, help="MPNP: points per pseudo context set (default 10)")
    train.add_argument("--pseudo-weight", type=float, default=0.1, help="MPNP: weight of the pseudo data term (default 0.1)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint-every", type=int, default=1000, help="steps between saved training states")
    train.add_argument("--max-minutes", type=float, default=None, help="stop and save after this much wall time")
    train.add_argument("--no-progress", action="store_true", help="log the loss instead of drawing a progress bar")
    train.set_defaults(handler=run_np_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="Context and target log-likelihood per point of a trained neural process on held-out tasks.",
        description=(
            "Draw held-out tasks from a task family and report the mean context and target log-likelihood "
            "per point, with standard errors over tasks. To score several checkpoints on the same tasks, "
            "use `probnn np compare`."
        ),
    )
    evaluate.add_argument("--checkpoint", required=True, help="shipped checkpoint name or a training folder")
    evaluate.add_argument("--task", default=None, help="task family (default: the one the checkpoint was trained on)")
    evaluate.add_argument("--tasks", type=int, default=5000, help="held-out tasks (default 5000)")
    evaluate.add_argument("--seed", type=int, default=12345, help="seed of the held-out tasks (default 12345)")
    evaluate.add_argument("--out", type=Path, default=None, help="write the log-likelihoods as JSON to this file")
    evaluate.set_defaults(handler=run_np_evaluate)

    compare = commands.add_parser(
        "compare",
        help="Score several neural processes on the same held-out tasks of several families; table and plots.",
        description=(
            "Score each checkpoint on the same held-out tasks of each task family and write compare.json, "
            "table.md (with paired differences to --reference) and, for each GP family, predictions_TASK.png: "
            "one row of 1-d predictions per checkpoint beside the exact GP posterior."
        ),
    )
    compare.add_argument(
        "--checkpoints", required=True,
        help="comma-separated shipped names or training folders; LABEL=PATH sets the label (default: the name)",
    )
    compare.add_argument(
        "--tasks", default="rbf,matern,periodic,t-noise",
        help="comma-separated task families (default rbf,matern,periodic,t-noise); --num-tasks sets the count",
    )
    compare.add_argument("--num-tasks", type=int, default=5000, help="held-out tasks per family (default 5000)")
    compare.add_argument("--seed", type=int, default=12345, help="seed of the held-out tasks (default 12345)")
    compare.add_argument("--reference", default=None, help="label for the paired differences (default: none)")
    compare.add_argument("--out", type=Path, required=True, help="output folder")
    compare.add_argument("--no-plots", action="store_true", help="skip the prediction plots")
    compare.add_argument("--no-progress", action="store_true", help="no progress bar")
    compare.set_defaults(handler=run_np_compare)

    listing = commands.add_parser("list", help="List the neural process checkpoints shipped with probnn.")
    listing.set_defaults(handler=run_np_list)
    parser.set_defaults(handler=lambda args: missing_command(parser))


def run_np_train(args) -> int:
    from probnn.np import MODEL_NAMES, NPConfig, NPTrainSettings, train_np
    from probnn.priors.np_tasks import make_np_task

    for flag in ("steps", "batch_size", "hidden", "pseudo_sets", "pseudo_size"):
        check_positive(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.model not in MODEL_NAMES:
        raise ValueError(f"Unknown model {args.model!r}; choose one of {', '.join(MODEL_NAMES)}.")
    task = make_np_task(args.task)
    config = NPConfig(
        model=args.model, hidden=args.hidden, num_pseudo_sets=args.pseudo_sets, pseudo_size=args.pseudo_size
    )
    settings = NPTrainSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup,
        pseudo_weight=args.pseudo_weight,
        seed=args.seed,
    )
    network = train_np(
        config,
        task,
        settings,
        args.out,
        task_name=args.task,
        checkpoint_every=args.checkpoint_every,
        max_minutes=args.max_minutes,
        progress=not args.no_progress,
    )
    training = network.metadata.get("training", {})
    print(
        f"Trained {args.model} ({training.get('parameters', 0):,} parameters) for {training.get('steps_done')} steps "
        f"in {training.get('seconds', 0) / 60:.1f} min on {training.get('hardware')}; checkpoint in {args.out}."
    )
    return 0


def run_np_evaluate(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from probnn.np import evaluate_np, load_np

    check_positive(args.tasks, "--tasks")
    network = load_np(args.checkpoint)
    task_name = args.task or network.metadata.get("task_name")
    if task_name is None:
        raise ValueError(f"The checkpoint {args.checkpoint} records no task name; pass --task.")
    result = evaluate_np(network, task_name, num_tasks=args.tasks, seed=args.seed)
    table = Table(title=f"{network.config.model} {args.checkpoint} on {args.tasks} tasks from {task_name}")
    for column in ("log-likelihood per point", "mean", "std. error"):
        table.add_column(column)
    table.add_row("context", f"{result['context_ll']:.4f}", f"{result['context_ll_se']:.4f}")
    table.add_row("target", f"{result['target_ll']:.4f}", f"{result['target_ll_se']:.4f}")
    Console().print(table)
    if args.out is not None:
        record = {
            "checkpoint": str(args.checkpoint),
            "model": network.config.model,
            "task": task_name,
            "seed": args.seed,
            **result,
            "training": network.metadata.get("training"),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2))
        logger.info("Wrote %s", args.out)
    return 0


def _labelled_checkpoints(value: str) -> dict[str, str]:
    checkpoints = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        label, _, path = item.rpartition("=")
        label = label or Path(path).name
        if label in checkpoints:
            raise ValueError(f"--checkpoints names the label {label!r} twice; give LABEL=PATH to tell them apart.")
        checkpoints[label] = path
    if not checkpoints:
        raise ValueError("--checkpoints is empty; pass at least one checkpoint name or folder.")
    return checkpoints


def run_np_compare(args) -> int:
    from rich.console import Console
    from rich.markdown import Markdown

    from probnn.np.compare import compare_np, comparison_table
    from probnn.np.plots import plot_np_predictions
    from probnn.priors.np_tasks import GPNPTask, make_np_task

    check_positive(args.num_tasks, "--num-tasks")
    checkpoints = _labelled_checkpoints(args.checkpoints)
    tasks = [name.strip() for name in args.tasks.split(",") if name.strip()]
    result = compare_np(
        checkpoints, tasks, num_tasks=args.num_tasks, seed=args.seed, reference=args.reference,
        progress=not args.no_progress,
    )
    result["checkpoints"] = checkpoints
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps(result, indent=2))
    table = comparison_table(result)
    (args.out / "table.md").write_text(table)
    Console().print(Markdown(table))
    if not args.no_plots:
        for task in tasks:
            if isinstance(make_np_task(task), GPNPTask):
                path = args.out / f"predictions_{task}.png"
                plot_np_predictions(checkpoints, path, task=task, seed=args.seed)
                logger.info("Wrote %s", path)
    print(f"Wrote compare.json and table.md to {args.out}.")
    return 0


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def run_np_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from probnn.np import SHIPPED_NP_CHECKPOINTS, load_np

    table = Table(title="Neural process checkpoints shipped with probnn")
    for column in ("name", "description", "model", "parameters", "training"):
        table.add_column(column)
    for name, description in SHIPPED_NP_CHECKPOINTS.items():
        network = load_np(name)
        training = network.metadata.get("training", {})
        table.add_row(
            name,
            description,
            network.config.model,
            f"{training.get('parameters', 0):,}",
            f"{training.get('steps_done')} steps, {_duration(training.get('seconds', 0))}",
        )
    if not SHIPPED_NP_CHECKPOINTS:
        print("No neural process checkpoints ship with this version; train one with `probnn np train`.")
        return 0
    Console().print(table)
    return 0
