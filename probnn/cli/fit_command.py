"""``probnn fit``: a posterior predictive study of several models on a regression dataset."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("probnn.cli")

DEFAULT_MODELS = ("gp-nngp", "tp-nngp", "smnngp-burr")
DEFAULT_RANDOM_SPLITS = 5
# The processes import JAX, so these plain constants are repeated here to keep `--help` fast.
EXACT_FIT_POINTS = 3_000
SPARSE_FIT_POINTS = 10_000
SPARSE_ABOVE = 20_000
DEFAULT_NUM_INDUCING = 512
APPROXIMATIONS = ("auto", "exact", "sparse")
INDUCING_INITIALIZATIONS = ("kmeans", "kcenter", "random")
RUNS_NAME = "runs.jsonl"
METRIC_NAMES = ("nll", "rmse", "crps", "coverage_50", "coverage_90", "coverage_95")


def add_fit_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="Fit and compare regression models on a dataset (test NLL, RMSE, CRPS, coverage).",
        description=(
            "Fit each model on the training part of each split, predict the test part, and write "
            "metrics.json, table.md, calibration.png (and band.png for 1-d inputs) to the output "
            "folder. Inputs are standardised with training statistics; the processes standardise "
            "targets themselves, and metrics are reported on the original target scale, with NLL "
            "and RMSE also on the standardised scale. Rerunning with the same --out skips the runs "
            "already finished."
        ),
    )
    parser.add_argument(
        "--data", required=True,
        help=(
            "a bundled dataset name (see `probnn datasets`), a CSV or whitespace-separated file, or a "
            "folder in the UCI split layout (data.txt, index_features.txt, index_target.txt, "
            "index_train_K.txt, index_test_K.txt)"
        ),
    )
    parser.add_argument("--target", default=None, help="target column of a file: header name or 0-based index (default: last column)")
    parser.add_argument(
        "--model", action="append", default=None,
        help=f"model name, repeatable or comma-separated (default {','.join(DEFAULT_MODELS)}); see `probnn models`",
    )
    parser.add_argument("--split", type=int, default=None, metavar="K", help="run only split K (0-based)")
    parser.add_argument(
        "--splits", type=int, default=None, metavar="N",
        help=f"run the first N splits (default: all standard splits, or {DEFAULT_RANDOM_SPLITS} random 90/10 splits when the data has none)",
    )
    parser.add_argument("--restarts", type=int, default=4, help="L-BFGS starts of the marginal-likelihood fit (default 4)")
    parser.add_argument("--max-iterations", type=int, default=200, help="L-BFGS iterations per start (default 200)")
    parser.add_argument(
        "--max-fit-points", type=int, default=None,
        help=(
            "fit hyperparameters on a random subset of at most this many training points, then "
            f"condition on all of them (default {EXACT_FIT_POINTS} for exact models, whose fit costs "
            f"O(n^3) per iteration, and {SPARSE_FIT_POINTS} for sparse ones)"
        ),
    )
    parser.add_argument(
        "--approximation", choices=APPROXIMATIONS, default="auto",
        help=(
            "condition exactly, or through inducing points in O(n M^2); auto (default) is exact up "
            f"to {SPARSE_ABOVE} training points and sparse above"
        ),
    )
    parser.add_argument(
        "--num-inducing", type=int, default=DEFAULT_NUM_INDUCING, metavar="M",
        help=f"inducing points of the sparse approximation (default {DEFAULT_NUM_INDUCING})",
    )
    parser.add_argument(
        "--inducing-init", choices=INDUCING_INITIALIZATIONS, default="kmeans",
        help="initial inducing points: k-means centres (default), a k-center cover, or a random subset",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of restarts, random splits and subsets (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="log one line per run instead of a progress bar")
    parser.set_defaults(handler=run_fit)


def add_models_parser(subparsers) -> None:
    parser = subparsers.add_parser("models", help="List the regression models of `probnn fit`.")
    parser.set_defaults(handler=run_models)


def add_datasets_parser(subparsers) -> None:
    parser = subparsers.add_parser("datasets", help="List the bundled datasets of `probnn fit`.")
    parser.set_defaults(handler=run_datasets)


def _print_listing(title: str, entries: dict) -> None:
    """Print a two-column table of names and descriptions."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("name")
    table.add_column("description")
    for name, description in entries.items():
        table.add_row(name, description)
    Console().print(table)


def run_models(args) -> int:
    from probnn.processes.registry import REGRESSION_MODELS

    _print_listing("probnn regression models", {name: description for name, (_, description) in REGRESSION_MODELS.items()})
    return 0


def run_datasets(args) -> int:
    from probnn.data import list_datasets

    _print_listing("probnn bundled datasets", list_datasets())
    return 0


# -- settings ----------------------------------------------------------------------------


def _model_names(values) -> list[str]:
    from probnn.processes.registry import REGRESSION_MODELS

    names = []
    for value in values or [",".join(DEFAULT_MODELS)]:
        for name in value.split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name not in REGRESSION_MODELS:
                raise ValueError(f"--model {name!r} is not a known model; choose from {', '.join(REGRESSION_MODELS)}.")
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError("--model is empty; pass at least one model name.")
    return names


def _split_indices(args, dataset) -> list[int]:
    available = dataset.num_splits if dataset.num_splits else None
    if args.split is not None and args.splits is not None:
        raise ValueError("Pass either --split K or --splits N, not both.")
    if args.split is not None:
        if args.split < 0 or (available is not None and args.split >= available):
            limit = f"0 to {available - 1}" if available else "0 or more"
            raise ValueError(f"--split {args.split} is out of range; {dataset.name} has splits {limit}.")
        return [args.split]
    if args.splits is not None:
        if args.splits < 1:
            raise ValueError(f"--splits must be at least 1, got {args.splits}.")
        if available is not None and args.splits > available:
            raise ValueError(f"--splits {args.splits} exceeds the {available} standard splits of {dataset.name}.")
        return list(range(args.splits))
    return list(range(available if available is not None else DEFAULT_RANDOM_SPLITS))


def _check_positive(name: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")


# -- one run -----------------------------------------------------------------------------


def _split_data(dataset, k: int, seed: int):
    from probnn.data import random_split

    if dataset.num_splits:
        return dataset.split(k)
    return random_split(dataset, k, test_fraction=0.1, seed=seed)


def fit_and_evaluate(
    name: str, X_train, y_train, X_test, y_test, *, seed: int, restarts: int, max_iterations: int,
    max_fit_points: int | None = None, approximation: str = "auto", num_inducing: int = DEFAULT_NUM_INDUCING,
    inducing_init: str = "kmeans",
):
    """Fit the named model on one split and score its test predictive.

    Inputs are standardised with training statistics. Hyperparameters are fitted on at most
    ``max_fit_points`` training points (a random subset) and the posterior is then
    conditioned on all of them, exactly or through inducing points
    (:func:`probnn.processes.large.fit_large`).

    Returns
    -------
    record : dict
        Metrics on the original target scale, ``nll_standardized`` and
        ``rmse_standardized`` on the scale of the training targets' standard deviation,
        ``seconds`` (fit plus prediction, wall clock), and the sizes.
    posterior
        The fitted posterior, on standardised inputs.
    input_scaling : (mean, std)
        The training statistics that standardised the inputs.
    """
    import jax

    from probnn.data import standardize
    from probnn.metrics import calibration_curve, regression_metrics
    from probnn.np import NPModel
    from probnn.processes.large import choose_approximation, default_fit_points, fit_large
    from probnn.processes.registry import make_regression_model

    X_train_std, X_test_std, input_scaling = standardize(X_train, X_test)
    y_std = float(np.std(y_train)) or 1.0
    key = jax.random.key(seed)
    start = time.perf_counter()
    model = make_regression_model(name, X_train.shape[1], num_restarts=restarts, max_iterations=max_iterations)
    method = choose_approximation(X_train.shape[0], approximation)
    if max_fit_points is None:
        max_fit_points = default_fit_points(method)
    if isinstance(model, NPModel):
        # A trained neural process conditions in one forward pass; it has nothing to fit and
        # takes a subset of at most its point limit.
        posterior = model.fit(X_train_std, y_train, key=key)
        method, max_fit_points = "neural-process", posterior.num_context
    else:
        posterior = fit_large(
            model, X_train_std, y_train, key=key, approximation=method, num_inducing=num_inducing,
            inducing_init=inducing_init, max_fit_points=max_fit_points, seed=seed,
        )
    predictive = posterior.predict(X_test_std)
    jax.block_until_ready(predictive.mean)
    seconds = time.perf_counter() - start
    record = regression_metrics(predictive, y_test, key=jax.random.key(seed + 1))
    record = {name: float(value) for name, value in record.items()}
    nominal, observed = calibration_curve(predictive, y_test)
    record["calibration_nominal"] = [round(float(v), 6) for v in nominal]
    record["calibration_observed"] = [float(v) for v in observed]
    # Change of variables: the density of y / sd is sd times the density of y.
    record["nll_standardized"] = record["nll"] - float(np.log(y_std))
    record["rmse_standardized"] = record["rmse"] / y_std
    record.update(
        seconds=seconds, num_train=int(X_train.shape[0]), num_test=int(X_test.shape[0]),
        num_fit=int(min(max_fit_points, X_train.shape[0])), approximation=method,
    )
    if method == "sparse":
        record["num_inducing"] = int(posterior.inducing_inputs.shape[0])
    return record, posterior, input_scaling


# -- the study ---------------------------------------------------------------------------


def _read_runs(path: Path, settings: dict) -> dict:
    """Finished runs of an earlier call with the same output folder, keyed by (model, split)."""
    if not path.exists():
        return {}
    runs = {}
    with open(path) as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # A crash can leave a half-written last line; the run is redone.
                logger.warning("Ignoring unreadable line %d of %s.", number, path)
                continue
            if record.get("settings") != settings:
                raise ValueError(
                    f"{path} contains runs made with other settings ({record.get('settings')}); pass another --out "
                    "or the same --data, --target, --restarts, --max-iterations, --max-fit-points, --approximation, "
                    "--num-inducing, --inducing-init and --seed."
                )
            runs[(record["model"], record["split"])] = record
    return runs


def _append_run(path: Path, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_fit(args) -> int:
    from probnn.data import load_dataset

    names = _model_names(args.model)
    _check_positive("--restarts", args.restarts)
    _check_positive("--max-iterations", args.max_iterations)
    if args.max_fit_points is not None:
        _check_positive("--max-fit-points", args.max_fit_points, minimum=3)
    _check_positive("--num-inducing", args.num_inducing)
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file, not a folder; pass a folder path.")
    dataset = load_dataset(args.data, target=args.target)
    if dataset.task != "regression":
        raise ValueError(f"{dataset.name} is a classification dataset; `probnn fit` fits regression models.")
    from probnn.processes.registry import make_regression_model

    # Building each model once checks that it takes this many features (the neural
    # processes take one) before any fit runs.
    for name in names:
        make_regression_model(name, dataset.X.shape[1])
    splits = _split_indices(args, dataset)
    settings = {
        "data": str(args.data),
        "target": args.target,
        "restarts": args.restarts,
        "max_iterations": args.max_iterations,
        "max_fit_points": args.max_fit_points,
        "approximation": args.approximation,
        "num_inducing": args.num_inducing,
        "inducing_init": args.inducing_init,
        "seed": args.seed,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    runs_path = args.out / RUNS_NAME
    runs = _read_runs(runs_path, settings)
    todo = [(k, name) for k in splits for name in names if (name, k) not in runs]
    if len(todo) < len(splits) * len(names):
        logger.info("%s: %d of %d runs already finished; running the rest.", args.out, len(splits) * len(names) - len(todo), len(splits) * len(names))

    band_data = {}
    interrupted = False
    previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        _run_all(args, dataset, todo, runs, runs_path, settings, band_data)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous_handler)

    summary = _write_outputs(args.out, dataset, names, splits, runs, band_data)
    if interrupted:
        print(
            f"Interrupted; {len(runs)} finished runs are kept in {runs_path}. Rerun the same command to finish the rest.",
            file=sys.stderr,
        )
        return 130
    print((args.out / "table.md").read_text())
    print(f"Results in {args.out}/")
    return 0 if summary["models"] else 1


def _run_all(args, dataset, todo, runs, runs_path, settings, band_data) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"), TimeElapsedColumn()]
    one_dimensional = dataset.X.shape[1] == 1
    with Progress(*columns, disable=args.no_progress, transient=False) as progress:
        task = progress.add_task(f"{dataset.name}", total=len(todo), last="")
        for k, name in todo:
            progress.update(task, description=f"{dataset.name} split {k}: {name}")
            X_train, y_train, X_test, y_test = _split_data(dataset, k, args.seed)
            record, posterior, input_scaling = fit_and_evaluate(
                name, X_train, y_train, X_test, y_test,
                seed=args.seed + k, restarts=args.restarts, max_iterations=args.max_iterations,
                max_fit_points=args.max_fit_points, approximation=args.approximation,
                num_inducing=args.num_inducing, inducing_init=args.inducing_init,
            )
            record = {"model": name, "split": k, **record, "settings": settings}
            _append_run(runs_path, record)
            runs[(name, k)] = record
            if one_dimensional and k == todo[0][0]:
                band_data[name] = _band(posterior, input_scaling, X_train, y_train, X_test, y_test)
            message = f"nll {record['nll']:.3f}, {record['seconds']:.1f} s"
            progress.update(task, advance=1, last=message)
            if args.no_progress:
                logger.info("%s split %d %s: %s", dataset.name, k, name, message)


def _band(posterior, input_scaling, X_train, y_train, X_test, y_test) -> dict:
    """Predictive quantiles of the fitted posterior on a dense grid, for the band plot of 1-d data."""
    from probnn.metrics import quantile

    grid = np.linspace(min(X_train.min(), X_test.min()), max(X_train.max(), X_test.max()), 300)[:, None]
    mean, std = input_scaling
    predictive = posterior.predict((grid - mean) / std)
    levels = np.array([0.025, 0.25, 0.5, 0.75, 0.975])
    quantiles = np.stack([quantile(predictive, np.full(grid.shape[0], q)) for q in levels])
    return {"grid": grid[:, 0], "quantiles": quantiles, "levels": levels, "train": (X_train[:, 0], y_train), "test": (X_test[:, 0], y_test)}


# -- outputs -----------------------------------------------------------------------------


def _summarise(runs: dict, names, splits) -> dict:
    models = {}
    for name in names:
        records = [runs[(name, k)] for k in splits if (name, k) in runs]
        if not records:
            continue
        entry = {"splits": [r["split"] for r in records]}
        for metric in (*METRIC_NAMES, "nll_standardized", "rmse_standardized", "seconds"):
            values = np.array([r[metric] for r in records], dtype=float)
            entry[metric] = float(np.mean(values))
            # Standard error over splits, as Bayesian deep learning papers report it.
            entry[f"{metric}_stderr"] = float(np.std(values, ddof=1) / np.sqrt(values.size)) if values.size > 1 else None
        models[name] = entry
    return models


def _write_outputs(out: Path, dataset, names, splits, runs, band_data) -> dict:
    models = _summarise(runs, names, splits)
    summary = {
        "dataset": dataset.name,
        "num_rows": int(dataset.X.shape[0]),
        "num_features": int(dataset.X.shape[1]),
        "splits": splits,
        "complete": all((name, k) in runs for name in names for k in splits),
        "models": models,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "table.md").write_text(_markdown_table(dataset, models, splits))
    if models:
        _plot_calibration(out / "calibration.png", dataset, names, splits, runs)
    if band_data:
        _plot_bands(out / "band.png", dataset, band_data)
    return summary


def _format(entry: dict, metric: str, spec: str = ".3f") -> str:
    stderr = entry.get(f"{metric}_stderr")
    text = format(entry[metric], spec)
    return text if stderr is None else f"{text} ± {format(stderr, spec)}"


def _markdown_table(dataset, models: dict, splits) -> str:
    lines = [
        f"# {dataset.name}: test metrics, mean ± standard error over splits",
        "",
        f"{dataset.X.shape[0]} rows, {dataset.X.shape[1]} features, splits {splits[0]}..{splits[-1]}. "
        "NLL is per test point; 'std.' columns are on the scale of the training targets' standard deviation.",
        "",
        "| model | splits | NLL | NLL (std.) | RMSE | RMSE (std.) | CRPS | cov. 50% | cov. 90% | cov. 95% | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in models.items():
        cells = [
            name,
            str(len(entry["splits"])),
            _format(entry, "nll"),
            _format(entry, "nll_standardized"),
            _format(entry, "rmse", ".4g"),
            _format(entry, "rmse_standardized"),
            _format(entry, "crps", ".4g"),
            f"{entry['coverage_50']:.3f}",
            f"{entry['coverage_90']:.3f}",
            f"{entry['coverage_95']:.3f}",
            f"{entry['seconds']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot_calibration(path: Path, dataset, names, splits, runs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="ideal")
    for name in names:
        records = [runs[(name, k)] for k in splits if (name, k) in runs and "calibration_observed" in runs[(name, k)]]
        if not records:
            continue
        nominal = np.asarray(records[0]["calibration_nominal"])
        observed = np.mean([r["calibration_observed"] for r in records], axis=0)
        ax.plot(nominal, observed, "o-", ms=3, label=name)
    ax.set_xlabel("nominal central interval probability")
    ax.set_ylabel("observed fraction of test targets inside")
    ax.set_title(f"{dataset.name}: calibration, mean over splits")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_bands(path: Path, dataset, band_data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(band_data)
    fig, axes = plt.subplots(1, count, figsize=(5 * count, 4), squeeze=False, sharey=True)
    for ax, (name, band) in zip(axes[0], band_data.items()):
        grid, quantiles = band["grid"], band["quantiles"]
        ax.fill_between(grid, quantiles[0], quantiles[4], alpha=0.2, color="C0", label="95% interval")
        ax.fill_between(grid, quantiles[1], quantiles[3], alpha=0.35, color="C0", label="50% interval")
        ax.plot(grid, quantiles[2], color="C0", lw=1.5, label="median")
        ax.plot(*band["train"], "k.", ms=4, label="train")
        ax.plot(*band["test"], "x", color="C3", ms=5, label="test")
        ax.set_title(name)
        ax.set_xlabel(dataset.feature_names[0])
    axes[0, 0].set_ylabel(dataset.target_name)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{dataset.name}: posterior predictive, first split")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
