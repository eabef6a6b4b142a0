"""sweep.data downloads through a real HTTP server on 127.0.0.1 (never the network)."""

import functools
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from sweep.data import DATASETS, DataError, DatasetSpec, FileSpec, download, load_dataset, register_dataset
from sweep.data.download import source_url


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        if self.path.startswith("/broken/"):
            # Promise 10,000 bytes, send 100 and hang up: a download that breaks off.
            self.send_response(200)
            self.send_header("Content-Length", "10000")
            self.end_headers()
            self.wfile.write(b"x" * 100)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """(base_url, served_dir): a threaded HTTP server on 127.0.0.1, port chosen by the OS."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def serve(root: Path, relpath: str, payload: bytes) -> FileSpec:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return FileSpec(relpath, "http://127.0.0.1:9/canonical/" + relpath, hashlib.sha256(payload).hexdigest(), len(payload))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file())


def test_download_from_mirror_verifies_and_places_the_file(server, tmp_path):
    base, root = server
    spec = serve(root, "mnist/t10k-labels-idx1-ubyte.gz", gzip.compress(b"payload" * 1000))
    data_dir = tmp_path / "data"
    path = download(spec, data_dir, mirror=base, progress=False)
    assert path == data_dir / spec.relpath
    assert path.read_bytes() == (root / spec.relpath).read_bytes()
    assert leftovers(data_dir) == ["t10k-labels-idx1-ubyte.gz"]  # no temporary file left behind


def test_mirror_environment_variable(monkeypatch, server):
    base, root = server
    spec = serve(root, "a/b.gz", b"zz")
    monkeypatch.setenv("SPARSESWEEP_DATA_MIRROR", base + "/")
    assert source_url(spec) == f"{base}/a/b.gz"
    monkeypatch.delenv("SPARSESWEEP_DATA_MIRROR")
    assert source_url(spec) == spec.url


def test_checksum_mismatch_writes_nothing(server, tmp_path):
    base, root = server
    spec = serve(root, "mnist/x.gz", b"the real bytes")
    wrong = FileSpec(spec.relpath, spec.url, "0" * 64)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match="SHA-256") as info:
        download(wrong, data_dir, mirror=base, progress=False)
    assert "nothing was written" in str(info.value).lower()
    assert leftovers(data_dir) == []


def test_broken_off_transfer_writes_nothing_and_is_not_resumed(server, tmp_path):
    base, _ = server
    spec = FileSpec("broken/file.gz", "unused", None)
    data_dir = tmp_path / "data"
    # A stale partial file from an earlier crash must not be picked up either.
    (data_dir / "broken").mkdir(parents=True)
    (data_dir / "broken" / ".file.gz.stale.part").write_bytes(b"old")
    with pytest.raises(DataError, match="broke off|truncated"):
        download(spec, data_dir, mirror=base, progress=False)
    assert not (data_dir / spec.relpath).exists()
    assert leftovers(data_dir) == [".file.gz.stale.part"]


def test_unreachable_source_names_the_url_and_the_fixes(tmp_path):
    spec = FileSpec("mnist/x.gz", "http://127.0.0.1:9/nothing-listens-here/x.gz", None)
    with pytest.raises(DataError, match="could not download http://127.0.0.1:9/") as info:
        download(spec, tmp_path, progress=False, timeout=5)
    assert "--mirror" in str(info.value) and str(tmp_path / spec.relpath) in str(info.value)


def test_missing_file_is_not_found_on_the_server(server, tmp_path):
    base, _ = server
    spec = FileSpec("mnist/absent.gz", "unused", None)
    with pytest.raises(DataError, match="404"):
        download(spec, tmp_path, mirror=base, progress=False)
    assert leftovers(tmp_path) == []


def test_uncompressed_source_is_gzipped_and_checked_by_content(server, tmp_path):
    base, root = server
    header = ",".join([f"f{i}" for i in range(28)] + ["label"])
    rows = [",".join([f"{v:.6f}" for v in np.random.default_rng(i).normal(size=28)] + [str(i % 2)]) for i in range(12)]
    csv = ("\n".join([header] + rows) + "\n").encode()
    (root / "raw.csv").write_bytes(csv)
    spec = FileSpec("samples/tiny.csv.gz", f"{base}/raw.csv", hashlib.sha256(csv).hexdigest(), checksum_of="content")
    register_dataset(DatasetSpec("tiny-higgs", "fixture", 28, 2, "higgs-sample", {"csv": spec},
                                 comparable_with_thesis=False))
    try:
        data = load_dataset("tiny-higgs", tmp_path / "data", progress=False)
    finally:
        DATASETS.pop("tiny-higgs")
    stored = tmp_path / "data" / spec.relpath
    assert gzip.decompress(stored.read_bytes()) == csv
    assert data.x_train.shape == (10, 28) and data.x_test.shape == (2, 28)


def _idx(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def test_load_dataset_downloads_missing_idx_files_through_the_mirror(server, tmp_path):
    base, root = server
    rng = np.random.default_rng(0)
    payloads = {
        "train_images": ("train-images-idx3-ubyte.gz", _idx(rng.integers(0, 256, (8, 28, 28)), 2051)),
        "train_labels": ("train-labels-idx1-ubyte.gz", _idx(np.arange(8) % 10, 2049)),
        "test_images": ("t10k-images-idx3-ubyte.gz", _idx(rng.integers(0, 256, (3, 28, 28)), 2051)),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", _idx(np.arange(3), 2049)),
    }
    files = {role: serve(root, f"tiny-mnist/{name}", payload) for role, (name, payload) in payloads.items()}
    register_dataset(DatasetSpec("tiny-mnist", "fixture", 784, 10, "idx", files))
    data_dir = tmp_path / "data"
    try:
        data = load_dataset("tiny-mnist", data_dir, mirror=base, progress=False)
        again = load_dataset("tiny-mnist", data_dir, download_missing=False)  # now local, verified
    finally:
        DATASETS.pop("tiny-mnist")
    assert data.x_train.shape == (8, 784) and data.y_test.tolist() == [0, 1, 2]
    assert (again.x_test == data.x_test).all()
    assert leftovers(data_dir) == sorted(name for name, _ in payloads.values())
