"""The `sweep` command line: a registry of subcommands, one module each under `sweep.cli`."""

from __future__ import annotations

import argparse
import importlib
import sys

from ._base import Command, UsageError

# Each module defines `command`, an instance of a `Command` subclass.
SUBCOMMAND_MODULES = [
    "list_",
    "run",
    "best",
    "status",
    "train",
    "reproduce",
    "report",
    "dashboard",
]


def load_commands() -> list[Command]:
    return [importlib.import_module(f"{__name__}.{m}").command for m in SUBCOMMAND_MODULES]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweep",
        description="Search the hyperparameters of evolving sparse networks with Optuna on a Dask(-CUDA) cluster.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in load_commands():
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub)
        sub.set_defaults(_command=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse exits 2 on usage errors
    try:
        return int(args._command.run(args) or 0)
    except UsageError as exc:
        print(f"sweep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sweep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
