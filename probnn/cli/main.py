"""Entry point of the ``probnn`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from probnn import __version__
from probnn.cli.bo_command import add_bo_parser, add_problems_parser, add_surrogates_parser
from probnn.cli.fit_command import add_datasets_parser, add_fit_parser, add_models_parser
from probnn.cli.np_command import add_np_parser
from probnn.cli.pfn_command import add_pfn_parser
from probnn.cli.study_command import add_study_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="probnn",
        description=(
            "Bayesian inference with neural-network priors: Bayesian optimization with NNGP, "
            "Student-t process and BNN surrogates (HMC, SGHMC, ensembles, Laplace, deep kernel "
            "learning, prior-fitted networks), surrogate studies, posterior predictive studies of scale "
            "mixtures of NNGPs, and training of prior-fitted networks and neural processes."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=f"probnn {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command")
    add_bo_parser(subparsers)
    add_problems_parser(subparsers)
    add_surrogates_parser(subparsers)
    add_study_parser(subparsers)
    add_fit_parser(subparsers)
    add_models_parser(subparsers)
    add_datasets_parser(subparsers)
    add_pfn_parser(subparsers)
    add_np_parser(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # The command line owns the process, so it may switch JAX to float64; the library
    # itself never changes global precision.
    import jax

    jax.config.update("jax_enable_x64", True)
    _enable_compilation_cache(jax)
    try:
        return args.handler(args)
    except ValueError as error:
        print(f"probnn {args.command}: error: {error}", file=sys.stderr)
        return 2


def _enable_compilation_cache(jax) -> None:
    """Keep compiled programs on disk so later runs skip most of the compilation.

    The folder is ``$PROBNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/probnn/jax``, else
    ``~/.cache/probnn/jax``; an empty ``PROBNN_CACHE_DIR`` turns the cache off.
    """
    folder = os.environ.get("PROBNN_CACHE_DIR")
    if folder == "":
        return
    if folder is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(base, "probnn", "jax")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        logging.getLogger("probnn.cli").warning("Compilation cache disabled: cannot create %s (%s).", folder, error)
        return
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


if __name__ == "__main__":
    sys.exit(main())
