"""Parsers for the on-disk formats: IDX (MNIST, Fashion-MNIST) and HIGGS CSV (UCI or header layouts).

Every parser reads the whole file before returning and raises `DataError` naming the file on anything short
or malformed, so a bad file is never half-loaded.
"""

from __future__ import annotations

import gzip
import itertools
import zlib
from pathlib import Path

import numpy as np

from .errors import DataError

IDX_IMAGES_MAGIC = 2051  # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 2049  # unsigned byte, 1 dimension


def _fix(path: Path) -> str:
    return f"Delete {path} and run again to download it afresh, or replace it with a good copy."


def read_gzip_bytes(path: Path) -> bytes:
    path = Path(path)
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise
    except (EOFError, OSError, zlib.error) as exc:  # EOFError: truncated; BadGzipFile is an OSError
        raise DataError(f"{path} is not a complete gzip file ({exc}). {_fix(path)}") from exc


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (optionally gzipped) as a uint8 array of the shape its header gives."""
    path = Path(path)
    raw = read_gzip_bytes(path) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes). {_fix(path)}")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path} has IDX magic number {found}, expected {magic}: wrong or corrupt file. {_fix(path)}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} ends inside its IDX header. {_fix(path)}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(
            f"{path} holds {len(raw) - header} data bytes but its header {shape} promises {expected - header}: "
            f"truncated or corrupt. {_fix(path)}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_higgs_csv(path: Path, max_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """HIGGS events as (features float32 (n, 28), labels int64 (n,)), at most `max_rows` of them.

    Two layouts are recognised: UCI's (no header; label first, then the 28 features) and a header row
    naming the columns with `label` among them (the SAS sample puts it last). The file is streamed, so the
    first 600k rows of the 2.6 GB UCI file are read without decompressing the rest.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as stream:
            first = stream.readline().strip()
            if not first:
                raise DataError(f"{path} is empty. {_fix(path)}")
            names = [c.strip().lower() for c in first.split(",")]
            if _is_number(names[0]):
                label_col, lines = 0, itertools.chain([first], stream)
            elif "label" in names:
                label_col, lines = names.index("label"), stream
            else:
                raise DataError(f"{path} has a header row without a 'label' column: {first[:120]!r}")
            table = np.loadtxt(lines, delimiter=",", dtype=np.float64, max_rows=max_rows, ndmin=2)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"{path} is not a complete gzip file ({exc}). {_fix(path)}") from exc
    except ValueError as exc:
        raise DataError(f"{path} is not a numeric HIGGS CSV ({exc}). {_fix(path)}") from exc
    if table.shape[1] != 29:
        raise DataError(f"{path} has {table.shape[1]} columns, expected 29 (label + 28 features). {_fix(path)}")
    labels = table[:, label_col]
    if not np.isin(labels, (0.0, 1.0)).all():
        raise DataError(f"{path}: column {label_col} should be the 0/1 label but holds other values. {_fix(path)}")
    features = np.delete(table, label_col, axis=1).astype(np.float32)
    return features, labels.astype(np.int64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
