"""Datasets for sparse-network training: bundled digits, MNIST, Fashion-MNIST, HIGGS and two HIGGS samples.

Files live in a data directory (`--data-dir`, $SPARSESWEEP_DATA_DIR, or ~/.cache/sparsesweep/data) in the layout
`<data_dir>/mnist/train-images-idx3-ubyte.gz`, ...; a missing file is downloaded from its canonical location
(or `<mirror>/<same path>`) and checksummed before use.
"""

from .datasets import DATA_DIR_ENV, Dataset, dataset_spec, default_data_dir, ensure_file, load_dataset, resolve_data_dir
from .download import MIRROR_ENV, checksum_problem, download, source_url
from .errors import DataError
from .formats import read_higgs_csv, read_idx
from .registry import DATASET_NAMES, DATASETS, DatasetSpec, FileSpec, register_dataset

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "DATA_DIR_ENV",
    "MIRROR_ENV",
    "DataError",
    "Dataset",
    "DatasetSpec",
    "FileSpec",
    "checksum_problem",
    "dataset_spec",
    "default_data_dir",
    "download",
    "ensure_file",
    "load_dataset",
    "read_higgs_csv",
    "read_idx",
    "register_dataset",
    "resolve_data_dir",
    "source_url",
]
