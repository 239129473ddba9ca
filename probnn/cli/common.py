"""Helpers shared by the ``probnn`` subcommands that group several commands."""

from __future__ import annotations


def missing_command(parser) -> int:
    """Print the group's help and return exit status 2, for a group called without a command."""
    parser.print_help()
    return 2


def check_positive(value, flag: str) -> None:
    """Raise ``ValueError`` naming ``flag`` when an optional count is given and below 1."""
    if value is not None and value < 1:
        raise ValueError(f"{flag} must be at least 1, got {value}.")
