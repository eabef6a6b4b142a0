"""Base class of `sweep` subcommands."""

from __future__ import annotations

import argparse


class UsageError(Exception):
    """Bad input from the user: printed as one clear message, exit status 2."""


class Command:
    """One `sweep` subcommand. Subclasses set `name` and `help` and implement the two methods."""

    name: str = ""
    help: str = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse turns the error into a usage error, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value}")
    return value
