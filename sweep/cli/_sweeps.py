"""Helpers shared by the sweep-platform subcommands (list, run, best, status): file/storage options, tables."""

from __future__ import annotations

import argparse
import json
import math

from ..config import ConfigError, load_sweeps
from ..study import StorageError, open_storage, storage_url_from
from ._base import UsageError


def add_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", metavar="PATH", default=None,
                        help="sweeps file (default: $SPARSESWEEP_SWEEPS, ./sweeps.yaml, else the packaged one)")


def add_storage_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", metavar="URL", default=None,
                        help="Optuna RDB storage URL (default: $SPARSESWEEP_STORAGE or the sweep's, sqlite:///sweeps.db)")


def load_file(args):
    try:
        return load_sweeps(args.file)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def open_existing_storage(url: str):
    try:
        return open_storage(url, create=False)
    except StorageError as exc:
        raise UsageError(str(exc)) from None


def resolve_storage(args, spec_storage: str | None = None) -> str:
    return storage_url_from(getattr(args, "storage", None), spec_storage)


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def dump_json(data) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)
