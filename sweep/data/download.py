"""Fetch a file from its canonical location (or a mirror) into the data directory, checksummed and atomic.

The bytes go to a temporary file beside the destination and are moved into place only once complete and
verified, so an interrupted or corrupt download leaves nothing behind (and nothing is ever resumed).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .errors import DataError
from .registry import FileSpec

MIRROR_ENV = "SPARSESWEEP_DATA_MIRROR"
_CHUNK = 1 << 20


def source_url(spec: FileSpec, mirror: str | None = None) -> str:
    """The URL to fetch `spec` from: `<mirror>/<relpath>` when a mirror is given or set in the environment."""
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV) or None
    if mirror:
        return f"{mirror.rstrip('/')}/{spec.relpath}"
    return spec.url


def sha256_of(path: Path, decompress: bool = False) -> str:
    digest = hashlib.sha256()
    opener = gzip.open if decompress else open
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_problem(spec: FileSpec, path: Path) -> str | None:
    """Why `path` is not the file `spec` describes (a sentence), or None when its checksum matches."""
    if spec.sha256 is None:
        return None
    decompress = spec.checksum_of == "content"
    try:
        actual = sha256_of(path, decompress=decompress)
    except (EOFError, OSError, gzip.BadGzipFile) as exc:
        return f"it is not a complete gzip file ({exc})"
    if actual != spec.sha256:
        what = "its decompressed content has" if decompress else "it has"
        return f"{what} SHA-256 {actual}, expected {spec.sha256} (corrupt, truncated or a different file)"
    return None


def download(spec: FileSpec, data_dir: Path, *, mirror: str | None = None, progress: bool = True,
             timeout: float = 60.0) -> Path:
    """Download `spec` to `data_dir/spec.relpath`, verify its SHA-256, and return the path."""
    dest = Path(data_dir) / spec.relpath
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = source_url(spec, mirror)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    packed = tmp.with_name(tmp.name + ".gz")
    try:
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, spec, dest, progress, timeout)
        # Canonical sources of some files serve them uncompressed; we store every file gzipped.
        if spec.relpath.endswith(".gz") and not url.endswith(".gz"):
            with open(tmp, "rb") as src, gzip.GzipFile(packed, "wb", compresslevel=9, mtime=0) as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            os.replace(packed, tmp)
        problem = checksum_problem(spec, tmp)
        if problem:
            raise DataError(
                f"download of {url} is not the expected file: {problem}. Nothing was written to {dest}; "
                f"the source or mirror serves a different file."
            )
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)
        packed.unlink(missing_ok=True)


def _stream(url: str, out, spec: FileSpec, dest: Path, progress: bool, timeout: float) -> None:
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(
            f"could not download {url}: {exc}. Check the network, pass a mirror with --mirror or "
            f"${MIRROR_ENV}, or place the file at {dest} yourself."
        ) from exc
    with response:
        total = response.length
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {spec.relpath}",
                  disable=not progress, leave=False) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except Exception as exc:  # http.client.IncompleteRead, socket errors
                    raise DataError(
                        f"download of {url} broke off after {received} bytes ({exc!r}); nothing was written "
                        f"to {dest}. Run the command again."
                    ) from exc
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise DataError(
            f"download of {url} is truncated: got {received} of {total} bytes; nothing was written to "
            f"{dest}. Run the command again."
        )
