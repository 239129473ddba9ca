"""Entry point of the ``probnn`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from probnn.cli.bo_command import add_bo_parser, add_problems_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="probnn",
        description="Bayesian inference with neural-network priors: NNGP and Student-t process surrogates for Bayesian optimization.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(title="commands", dest="command", required=True)
    add_bo_parser(subparsers)
    add_problems_parser(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # The command line owns the process, so it may switch JAX to float64; the library
    # itself never changes global precision.
    import jax

    jax.config.update("jax_enable_x64", True)
    try:
        return args.handler(args)
    except ValueError as error:
        print(f"probnn {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
