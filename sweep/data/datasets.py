"""`load_dataset(name)`: locate (or download), verify and parse a dataset into tensors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .download import checksum_problem, download
from .errors import DataError
from .formats import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, read_higgs_csv, read_idx
from .registry import DATASETS, HIGGS_FIRST_ROW_PREFIX, HIGGS_ROWS, HIGGS_TRAIN_ROWS, DatasetSpec, FileSpec

DATA_DIR_ENV = "SPARSESWEEP_DATA_DIR"


@dataclass
class Dataset:
    """A classification dataset as tensors on one device, features float32, labels int64."""

    name: str
    x_train: torch.Tensor  # (n_train, n_features)
    y_train: torch.Tensor  # (n_train,)
    x_test: torch.Tensor  # (n_test, n_features)
    y_test: torch.Tensor  # (n_test,)
    n_classes: int
    source: str  # what exactly was loaded, for results files
    comparable_with_thesis: bool

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    def to(self, device: torch.device | str) -> "Dataset":
        """The dataset moved to `device` once, so training batches by index there without host copies."""
        move = lambda t: t.to(device, non_blocking=False)  # noqa: E731
        return Dataset(self.name, move(self.x_train), move(self.y_train), move(self.x_test), move(self.y_test),
                       self.n_classes, self.source, self.comparable_with_thesis)

    def describe(self) -> dict:
        return {
            "dataset": self.name,
            "train_rows": int(self.x_train.shape[0]),
            "test_rows": int(self.x_test.shape[0]),
            "features": int(self.n_features),
            "classes": int(self.n_classes),
            "source": self.source,
            "comparable_with_thesis": self.comparable_with_thesis,
        }


def default_data_dir() -> Path:
    """$SPARSESWEEP_DATA_DIR, else the per-user cache ($XDG_CACHE_HOME or ~/.cache)/sparsesweep/data."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "sparsesweep" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def dataset_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def ensure_file(spec: FileSpec, data_dir: Path, *, download_missing: bool = True, mirror: str | None = None,
                progress: bool = True) -> Path:
    """The verified local path of `spec`, downloading it first when missing."""
    path = data_dir / spec.relpath
    if not path.exists():
        if not download_missing:
            raise DataError(f"{path} is missing; download it from {spec.url} or allow downloads.")
        return download(spec, data_dir, mirror=mirror, progress=progress)
    problem = checksum_problem(spec, path)
    if problem:
        raise DataError(f"{path} is not the expected file: {problem}. Delete it and run again to download it "
                        f"afresh, or replace it with a good copy.")
    return path


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *, device: str | torch.device = "cpu",
                 download_missing: bool = True, mirror: str | None = None, progress: bool = True) -> Dataset:
    """Load dataset `name` (see `DATASETS`) from `data_dir`, downloading and verifying missing files."""
    spec = dataset_spec(name)
    directory = resolve_data_dir(data_dir)
    files = {role: ensure_file(f, directory, download_missing=download_missing, mirror=mirror, progress=progress)
             for role, f in spec.files.items()}
    if spec.kind == "digits":
        dataset = _digits()
    elif spec.kind == "idx":
        dataset = _idx_dataset(spec, files)
    elif spec.kind == "higgs-600k":
        dataset = _higgs_600k(spec, files["csv"])
    elif spec.kind == "higgs-sample":
        dataset = _higgs_sample(spec, files["csv"])
    else:
        raise DataError(f"dataset {name!r} has unknown kind {spec.kind!r}")
    return dataset.to(device)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.data.astype(np.float32) / 16.0)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))  # fixed split, same everywhere
    train, test = order[:1437], order[1437:]
    return Dataset("digits", x[train], y[train], x[test], y[test], 10,
                   "scikit-learn load_digits(), bundled; fixed split 1437/360 (seed 0)", False)


def _idx_dataset(spec: DatasetSpec, files: dict[str, Path]) -> Dataset:
    arrays = {}
    for role, path in files.items():
        magic = IDX_IMAGES_MAGIC if role.endswith("images") else IDX_LABELS_MAGIC
        arrays[role] = read_idx(path, magic)
    for split in ("train", "test"):
        n_img, n_lab = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_img != n_lab:
            raise DataError(f"{files[split + '_images']} has {n_img} images but {files[split + '_labels']} has "
                            f"{n_lab} labels; one of them is the wrong file.")

    def images(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / 255.0)  # (n, 784) in [0, 1]

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    source = ", ".join(f"{p} ({len(arrays[r])} rows)" for r, p in files.items())
    return Dataset(spec.name, images(arrays["train_images"]), labels(arrays["train_labels"]),
                   images(arrays["test_images"]), labels(arrays["test_labels"]), spec.n_classes, source,
                   spec.comparable_with_thesis)


def _standardised(name: str, x: np.ndarray, y: np.ndarray, n_train: int, source: str, comparable: bool) -> Dataset:
    """Split at `n_train` and standardise every feature with the training rows' mean and std."""
    x_train, x_test = x[:n_train], x[n_train:]
    mean = x_train.mean(axis=0, dtype=np.float64)
    std = x_train.std(axis=0, dtype=np.float64)
    std[std == 0] = 1.0
    scale = lambda a: torch.from_numpy(((a - mean) / std).astype(np.float32))  # noqa: E731
    return Dataset(name, scale(x_train), torch.from_numpy(y[:n_train]), scale(x_test), torch.from_numpy(y[n_train:]),
                   2, source, comparable)


def _higgs_600k(spec: DatasetSpec, path: Path) -> Dataset:
    x, y = read_higgs_csv(path, max_rows=HIGGS_ROWS)
    if len(y) < HIGGS_ROWS:
        raise DataError(f"{path} has only {len(y)} rows; the thesis's split needs the first {HIGGS_ROWS} rows of "
                        f"UCI HIGGS.csv. Delete it and run again to download the full file.")
    first = (float(y[0]),) + tuple(float(v) for v in x[0, :3])
    if not np.allclose(first, HIGGS_FIRST_ROW_PREFIX, rtol=0, atol=1e-6):
        raise DataError(f"{path} does not start with row 1 of UCI HIGGS.csv (found {first}, expected "
                        f"{HIGGS_FIRST_ROW_PREFIX}); it is not the thesis's data. Replace it with UCI's HIGGS.csv.gz.")
    source = f"{path}: first {HIGGS_ROWS} rows of UCI HIGGS.csv, rows 1-{HIGGS_TRAIN_ROWS} train, the rest test"
    return _standardised(spec.name, x, y, HIGGS_TRAIN_ROWS, source, True)


def _higgs_sample(spec: DatasetSpec, path: Path) -> Dataset:
    x, y = read_higgs_csv(path)
    n_train = len(y) * 5 // 6  # the thesis's 500k:100k ratio
    source = (f"{path}: {len(y)} real HIGGS events, NOT the thesis's rows (sample); first {n_train} train, "
              f"last {len(y) - n_train} test")
    return _standardised(spec.name, x, y, n_train, source, False)
