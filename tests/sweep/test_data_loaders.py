"""sweep.data parsers and loaders on small files written in the real formats (IDX gzip, HIGGS CSV)."""

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from sweep.data import (DATASETS, DataError, DatasetSpec, FileSpec, default_data_dir, load_dataset,
                        read_higgs_csv, read_idx, register_dataset, resolve_data_dir)
from sweep.data.formats import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_gz(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload, mtime=0))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def higgs_rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 28)).astype(np.float32), rng.integers(0, 2, n)


def test_read_idx_parses_images_and_labels(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (7, 28, 28))
    labels = np.arange(7) % 10
    got_images = read_idx(write_gz(tmp_path / "i.gz", idx_bytes(images, IDX_IMAGES_MAGIC)), IDX_IMAGES_MAGIC)
    got_labels = read_idx(write_gz(tmp_path / "l.gz", idx_bytes(labels, IDX_LABELS_MAGIC)), IDX_LABELS_MAGIC)
    assert got_images.shape == (7, 28, 28) and (got_images == images).all()
    assert got_labels.tolist() == labels.tolist()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda raw: gzip.compress(raw, mtime=0)[:-20], "not a complete gzip file"),  # truncated download
        (lambda raw: gzip.compress(raw[:-5], mtime=0), "truncated or corrupt"),  # short IDX payload
        (lambda raw: gzip.compress(b"\x00\x00\x08\x01" + raw[4:], mtime=0), "magic number"),  # wrong file type
        (lambda raw: b"this is not gzip at all", "not a complete gzip file"),
    ],
    ids=["truncated-gzip", "short-payload", "wrong-magic", "not-gzip"],
)
def test_read_idx_rejects_damaged_files_by_name(tmp_path, damage, message):
    raw = idx_bytes(np.zeros((3, 4, 4)), IDX_IMAGES_MAGIC)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage(raw))
    with pytest.raises(DataError, match=message) as info:
        read_idx(path, IDX_IMAGES_MAGIC)
    assert str(path) in str(info.value)


def test_read_higgs_csv_uci_layout_label_first(tmp_path):
    x, y = higgs_rows(12)
    lines = [",".join(f"{v:.18e}" for v in (float(label), *row)) for label, row in zip(y, x)]
    path = write_gz(tmp_path / "HIGGS.csv.gz", ("\n".join(lines) + "\n").encode())
    features, labels = read_higgs_csv(path)
    assert features.shape == (12, 28) and features.dtype == np.float32
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_allclose(features, x)
    features, labels = read_higgs_csv(path, max_rows=5)
    assert features.shape == (5, 28)


def test_read_higgs_csv_header_layout_label_last(tmp_path):
    x, y = higgs_rows(9)
    header = ",".join([f"f{i}" for i in range(28)] + ["label"])
    lines = [header] + [",".join([f"{v:.9f}" for v in row] + [str(label)]) for label, row in zip(y, x)]
    path = tmp_path / "higgs.csv"
    path.write_text("\n".join(lines) + "\n")
    features, labels = read_higgs_csv(path)
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_allclose(features, x, atol=1e-6)


@pytest.mark.parametrize(
    "text, message",
    [
        ("1,2,3\n0,1,2\n", "29"),  # wrong column count
        ("2," + ",".join(["0.5"] * 28) + "\n", "label"),  # label not 0/1
        ("1," + ",".join(["0.5"] * 28) + "\n0," + ",".join(["0.5"] * 10) + "\n", "not a numeric HIGGS CSV"),  # cut row
        ("a,b,c\n1,2,3\n", "'label' column"),
    ],
    ids=["columns", "labels", "truncated-row", "header-without-label"],
)
def test_read_higgs_csv_rejects_malformed_files(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        read_higgs_csv(path)
    assert str(path) in str(info.value)


@pytest.fixture
def tiny_idx_dataset(tmp_path):
    """A registered 'tiny-idx' dataset whose four IDX files sit in `source/` (the files, their checksums)."""
    rng = np.random.default_rng(1)
    source = tmp_path / "source"
    arrays = {
        "train-images-idx3-ubyte.gz": (rng.integers(0, 256, (20, 28, 28)), IDX_IMAGES_MAGIC),
        "train-labels-idx1-ubyte.gz": (np.arange(20) % 10, IDX_LABELS_MAGIC),
        "t10k-images-idx3-ubyte.gz": (rng.integers(0, 256, (6, 28, 28)), IDX_IMAGES_MAGIC),
        "t10k-labels-idx1-ubyte.gz": (np.arange(6) % 10, IDX_LABELS_MAGIC),
    }
    roles = ["train_images", "train_labels", "test_images", "test_labels"]
    files = {}
    for role, (name, (array, magic)) in zip(roles, arrays.items()):
        path = write_gz(source / "tiny-idx" / name, idx_bytes(array, magic))
        files[role] = FileSpec(f"tiny-idx/{name}", f"http://127.0.0.1:9/unreachable/{name}", sha256(path),
                               path.stat().st_size)
    spec = DatasetSpec("tiny-idx", "test fixture", 784, 10, "idx", files)
    register_dataset(spec)
    yield spec, source, arrays
    DATASETS.pop("tiny-idx", None)


def test_load_idx_dataset_from_data_dir(tiny_idx_dataset):
    spec, source, arrays = tiny_idx_dataset
    data = load_dataset("tiny-idx", source, download_missing=False)
    assert data.x_train.shape == (20, 784) and data.x_test.shape == (6, 784)
    assert data.x_train.dtype == torch.float32 and 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    expected = arrays["train-images-idx3-ubyte.gz"][0].reshape(20, -1) / 255.0
    np.testing.assert_allclose(data.x_train.numpy(), expected, rtol=1e-6)
    assert data.y_test.tolist() == list(range(6))
    assert data.describe()["train_rows"] == 20


def test_corrupt_local_file_is_reported_with_the_fix(tiny_idx_dataset):
    spec, source, _ = tiny_idx_dataset
    path = source / spec.files["test_labels"].relpath
    path.write_bytes(path.read_bytes()[:-3])  # truncated
    with pytest.raises(DataError, match="SHA-256") as info:
        load_dataset("tiny-idx", source, download_missing=False)
    assert str(path) in str(info.value) and "Delete it" in str(info.value)


def test_missing_file_without_download_names_the_file(tiny_idx_dataset, tmp_path):
    with pytest.raises(DataError, match="is missing"):
        load_dataset("tiny-idx", tmp_path / "empty", download_missing=False)


def test_mismatched_image_and_label_counts(tiny_idx_dataset):
    spec, source, _ = tiny_idx_dataset
    labels = write_gz(source / "tiny-idx" / "t10k-labels-idx1-ubyte.gz", idx_bytes(np.arange(5), IDX_LABELS_MAGIC))
    files = dict(spec.files)
    files["test_labels"] = FileSpec(files["test_labels"].relpath, "http://127.0.0.1:9/x", sha256(labels))
    register_dataset(DatasetSpec("tiny-idx", "", 784, 10, "idx", files))
    with pytest.raises(DataError, match="6 images but .* 5 labels"):
        load_dataset("tiny-idx", source, download_missing=False)


def test_digits_needs_no_files_and_has_a_fixed_split(tmp_path):
    a = load_dataset("digits", tmp_path / "nothing-here")
    b = load_dataset("digits", tmp_path / "nothing-here")
    assert a.x_train.shape == (1437, 64) and a.x_test.shape == (360, 64)
    assert torch.equal(a.y_test, b.y_test) and a.n_classes == 10
    assert float(a.x_train.max()) == 1.0
    assert not list((tmp_path).iterdir())  # nothing written


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARSESWEEP_DATA_DIR", str(tmp_path / "env"))
    assert default_data_dir() == tmp_path / "env"
    assert resolve_data_dir(None) == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("SPARSESWEEP_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "sparsesweep" / "data"


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError, match="mnist"):
        load_dataset("cifar")


@pytest.mark.parametrize("name, rows", [("higgs-h2o-5k", 5000), ("higgs-sas-11k", 10984)])
def test_real_higgs_samples_load_standardised(name, rows):
    if not (SHARED_DATA / DATASETS[name].files["csv"].relpath).exists():
        pytest.skip(f"the real HIGGS samples are not at {SHARED_DATA}")
    data = load_dataset(name, SHARED_DATA, download_missing=False)
    assert data.x_train.shape[0] + data.x_test.shape[0] == rows
    assert data.x_train.shape[1] == 28 and data.n_classes == 2
    assert set(data.y_train.unique().tolist()) == {0, 1}
    assert abs(float(data.x_train.mean())) < 1e-3 and abs(float(data.x_train.std()) - 1) < 1e-2
    assert not data.comparable_with_thesis and "NOT the thesis's rows" in data.source


def test_higgs_600k_refuses_a_short_file(tmp_path):
    x, y = higgs_rows(30)
    lines = [",".join(f"{v:.9e}" for v in (float(label), *row)) for label, row in zip(y, x)]
    write_gz(tmp_path / "higgs" / "HIGGS.csv.gz", ("\n".join(lines) + "\n").encode())
    with pytest.raises(DataError, match="only 30 rows"):
        load_dataset("higgs", tmp_path, download_missing=False)


def test_read_higgs_csv_truncated_gzip_is_reported(tmp_path):
    x, y = higgs_rows(400)
    lines = [",".join(f"{v:.18e}" for v in (float(label), *row)) for label, row in zip(y, x)]
    payload = gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)
    path = tmp_path / "HIGGS.csv.gz"
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match="not a complete gzip file|not a numeric HIGGS CSV") as info:
        read_higgs_csv(path)
    assert str(path) in str(info.value)
    features, _ = read_higgs_csv(path, max_rows=20)  # the intact beginning is still readable row by row
    assert features.shape == (20, 28)
