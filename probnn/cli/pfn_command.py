"""``probnn pfn``: train prior-fitted networks and evaluate them against GP posteriors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from probnn.cli.common import check_positive, missing_command

logger = logging.getLogger("probnn.cli")


def add_pfn_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pfn",
        help="Train a prior-fitted network (PFN) on a task prior, or evaluate one.",
        description="Prior-fitted networks: transformers that predict a posterior predictive in one forward pass.",
    )
    commands = parser.add_subparsers(title="pfn commands", dest="pfn_command")

    train = commands.add_parser(
        "train",
        help="Train a PFN on datasets drawn from a task prior.",
        description=(
            "Train a PFN on datasets drawn from a task prior. The folder --out keeps the training state; "
            "running the same command again resumes from the last saved step."
        ),
    )
    train.add_argument(
        "--prior", required=True, help="task prior: gp-rbf-1d, gp-hyper, gp-hyper-bo, bnn, nngp or tp-nngp"
    )
    train.add_argument("--steps", type=int, required=True, help="optimizer steps (the cosine schedule ends there)")
    train.add_argument("--out", type=Path, required=True, help="training folder; the checkpoint is written there")
    train.add_argument("--batch-size", type=int, default=64, help="datasets per step (default 64)")
    train.add_argument("--learning-rate", type=float, default=1e-3, help="AdamW peak learning rate (default 1e-3)")
    train.add_argument("--warmup", type=int, default=500, help="linear warm-up steps (default 500)")
    train.add_argument("--d-model", type=int, default=128, help="transformer width (default 128)")
    train.add_argument("--layers", type=int, default=4, help="transformer layers (default 4)")
    train.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    train.add_argument("--d-ff", type=int, default=256, help="feed-forward width (default 256)")
    train.add_argument("--buckets", type=int, default=1000, help="bar distribution buckets (default 1000)")
    train.add_argument(
        "--max-train-points", type=int, default=None,
        help="maximum training points per dataset (default 50 for 1-d priors, 60 otherwise)",
    )
    train.add_argument("--min-train-points", type=int, default=1, help="minimum training points per split (default 1)")
    train.add_argument("--num-points", type=int, default=None, help="points per dataset (default max-train-points + 10)")
    train.add_argument(
        "--normalize-y", action="store_true",
        help="let the network standardise each dataset's targets by its training points (default: raw targets)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--init-from", default=None, metavar="CHECKPOINT",
        help="start from this PFN (shipped name or folder) and fine-tune it; its architecture and buckets are kept, "
        "and the architecture options are ignored",
    )
    train.add_argument("--checkpoint-every", type=int, default=250, help="steps between saved training states")
    train.add_argument("--snapshot-every", type=int, default=None, help="also keep the network every this many steps")
    train.add_argument("--max-minutes", type=float, default=None, help="stop and save after this much wall time")
    train.add_argument("--no-progress", action="store_true", help="log the loss instead of drawing a progress bar")
    train.set_defaults(handler=run_pfn_train)

    evaluate = commands.add_parser(
        "evaluate",
        help="Compare a PFN's test NLL with exact and fitted GP posteriors on datasets from a GP prior.",
    )
    evaluate.add_argument(
        "--checkpoint", default="gp-rbf-1d", help="shipped checkpoint name (gp-rbf-1d, gp-hyper, gp-hyper-bo) or a folder"
    )
    evaluate.add_argument("--prior", default=None, help="GP task prior to draw datasets from (default: the checkpoint's)")
    evaluate.add_argument("--datasets", type=int, default=1000, help="held-out datasets (default 1000)")
    evaluate.add_argument("--min-train", type=int, default=5, help="minimum training points per dataset (default 5)")
    evaluate.add_argument("--max-train", type=int, default=None, help="maximum training points per dataset (default: the PFN's limit)")
    evaluate.add_argument("--seed", type=int, default=12345, help="seed of the held-out datasets")
    evaluate.add_argument(
        "--fitted-gp", type=int, default=0, metavar="N",
        help="also fit a GP by marginal likelihood on the first N datasets (about a second each)",
    )
    evaluate.add_argument("--out", type=Path, default=None, help="write the figures as JSON to this file")
    evaluate.add_argument("--plot", type=Path, default=None, help="draw a 1-d example of PFN and exact predictive")
    evaluate.set_defaults(handler=run_pfn_evaluate)

    listing = commands.add_parser("list", help="List the PFN checkpoints shipped with probnn.")
    listing.set_defaults(handler=run_pfn_list)
    parser.set_defaults(handler=lambda args: missing_command(parser))


def run_pfn_train(args) -> int:
    from probnn.pfn import PFNConfig, TrainSettings, train_pfn
    from probnn.priors.tasks import make_task_prior

    for flag in ("steps", "batch_size", "d_model", "layers", "heads", "d_ff", "max_train_points", "num_points"):
        check_positive(getattr(args, flag), "--" + flag.replace("_", "-"))
    prior = make_task_prior(args.prior)
    init = None
    if args.init_from is not None:
        from probnn.pfn import load_pfn

        init = load_pfn(args.init_from)
    max_train = args.max_train_points or (50 if prior.max_features == 1 else 60)
    config = init.config if init is not None else PFNConfig(
        max_features=prior.max_features,
        max_train_points=max_train,
        d_model=args.d_model,
        num_layers=args.layers,
        num_heads=args.heads,
        d_ff=args.d_ff,
        num_buckets=args.buckets,
        normalize_y=args.normalize_y,
    )
    settings = TrainSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        num_points=args.num_points,
        min_train_points=args.min_train_points,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup,
        seed=args.seed,
    )
    pfn = train_pfn(
        prior,
        config,
        settings,
        args.out,
        prior_name=args.prior,
        checkpoint_every=args.checkpoint_every,
        snapshot_every=args.snapshot_every,
        max_minutes=args.max_minutes,
        progress=not args.no_progress,
        init=init,
        init_name=args.init_from,
    )
    training = pfn.metadata["training"]
    print(
        f"Trained {training['parameters']:,} parameters for {training['steps_done']} steps in "
        f"{training['seconds'] / 60:.1f} min on {training['hardware']}; checkpoint in {args.out}."
    )
    return 0


def run_pfn_evaluate(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from probnn.pfn import load_pfn
    from probnn.pfn.evaluate import evaluate_pfn
    from probnn.priors.tasks import make_task_prior

    check_positive(args.datasets, "--datasets")
    pfn = load_pfn(args.checkpoint)
    prior_name = args.prior or pfn.metadata.get("prior_name")
    if prior_name is None:
        raise ValueError(f"The checkpoint {args.checkpoint} records no prior name; pass --prior.")
    prior = make_task_prior(prior_name)
    result = evaluate_pfn(
        pfn,
        prior,
        num_datasets=args.datasets,
        min_train=args.min_train,
        max_train=args.max_train,
        seed=args.seed,
        fitted_gp_datasets=args.fitted_gp,
    )
    summary = result.summary()
    table = Table(title=f"PFN {args.checkpoint} on {args.datasets} datasets from {prior_name}: test NLL per point")
    for column in ("predictive", "mean NLL", "std. error", "gap to exact", "datasets", "seconds"):
        table.add_column(column)
    gaps = {}
    for name, row in summary.items():
        gap = result.gap(name) if name != "exact" else (0.0, 0.0)
        gaps[name] = {"mean": gap[0], "stderr": gap[1]}
        table.add_row(
            name, f"{row['mean']:.4f}", f"{row['stderr']:.4f}", f"{gap[0]:+.4f} ± {gap[1]:.4f}",
            str(row["datasets"]), f"{row['seconds']:.1f}",
        )
    console = Console()
    console.print(table)
    paired = None
    if "gp-ml2" in result.nll:
        difference, stderr = result.gap("pfn", "gp-ml2")
        paired = {"mean": difference, "stderr": stderr, "datasets": summary["gp-ml2"]["datasets"]}
        console.print(
            f"PFN minus fitted GP on the same {paired['datasets']} datasets: {difference:+.4f} ± {stderr:.4f} nats per point"
        )
    if args.out is not None:
        record = {
            "checkpoint": str(args.checkpoint),
            "prior": prior_name,
            "datasets": args.datasets,
            "min_train": args.min_train,
            "max_train": args.max_train or pfn.config.max_train_points,
            "seed": args.seed,
            "summary": summary,
            "gap_to_exact": gaps,
            "pfn_minus_fitted_gp": paired,
            "training": pfn.metadata.get("training"),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2))
        logger.info("Wrote %s", args.out)
    if args.plot is not None:
        from probnn.pfn.plots import plot_predictive_1d

        plot_predictive_1d(pfn, prior, args.plot, seed=args.seed)
        logger.info("Wrote %s", args.plot)
    return 0


def run_pfn_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from probnn.pfn import SHIPPED_CHECKPOINTS, load_pfn

    table = Table(title="PFN checkpoints shipped with probnn")
    for column in ("name", "prior", "max features", "max training points", "parameters", "training"):
        table.add_column(column)
    for name, description in SHIPPED_CHECKPOINTS.items():
        try:
            pfn = load_pfn(name)
        except (ValueError, FileNotFoundError):
            table.add_row(name, description, "-", "-", "-", "not installed")
            continue
        training = pfn.metadata.get("training", {})
        table.add_row(
            name,
            description,
            str(pfn.config.max_features),
            str(pfn.config.max_train_points),
            f"{training.get('parameters', 0):,}",
            f"{training.get('steps_done')} steps, {training.get('seconds', 0) / 60:.0f} min",
        )
    Console().print(table)
    return 0

