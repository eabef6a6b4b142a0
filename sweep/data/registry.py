"""Which datasets exist, which files they need, where those files come from and their checksums.

A file lives at `<data_dir>/<relpath>`; a mirror (``--mirror`` or $SPARSESWEEP_DATA_MIRROR) serves the same
layout, so `<mirror>/<relpath>` replaces the canonical URL.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FileSpec:
    relpath: str  # path under the data directory, e.g. "mnist/train-images-idx3-ubyte.gz"
    url: str  # canonical public location
    sha256: str | None  # None where no published checksum is known
    size: int | None = None  # bytes of the stored file, for the progress bar
    # "file": sha256 is of the stored bytes. "content": of the decompressed content, for files whose canonical
    # source serves them uncompressed (we gzip them on download, and gzip output is not byte-reproducible).
    checksum_of: str = "file"

    @property
    def compress_after_download(self) -> bool:
        return self.relpath.endswith(".gz") and not self.url.endswith(".gz")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    n_features: int
    n_classes: int
    kind: str  # which loader parses it: "digits", "idx", "higgs-600k" or "higgs-sample"
    files: dict[str, FileSpec] = field(default_factory=dict)  # role -> file
    comparable_with_thesis: bool = True
    bundled: bool = False  # needs no file


_MNIST_BASE = "https://ossci-datasets.s3.amazonaws.com/mnist"
_FASHION_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"


def _idx_files(directory: str, base: str, checksums: dict[str, tuple[str, int]]) -> dict[str, FileSpec]:
    roles = {
        "train_images": "train-images-idx3-ubyte.gz",
        "train_labels": "train-labels-idx1-ubyte.gz",
        "test_images": "t10k-images-idx3-ubyte.gz",
        "test_labels": "t10k-labels-idx1-ubyte.gz",
    }
    return {
        role: FileSpec(f"{directory}/{name}", f"{base}/{name}", checksums[name][0], checksums[name][1])
        for role, name in roles.items()
    }


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> None:
    """Make `spec` loadable by name (the built-in datasets below are registered this way)."""
    DATASETS[spec.name] = spec


_register = register_dataset
_register(
    DatasetSpec(
        "digits",
        "scikit-learn's bundled 8x8 digits (1,797 images; 1,437 train / 360 test, fixed split)",
        64,
        10,
        "digits",
        bundled=True,
        comparable_with_thesis=False,
    )
)
_register(
    DatasetSpec(
        "mnist",
        "MNIST, the official IDX files (60,000 train / 10,000 test)",
        784,
        10,
        "idx",
        _idx_files(
            "mnist",
            _MNIST_BASE,
            {
                "train-images-idx3-ubyte.gz": (
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
                "train-labels-idx1-ubyte.gz": (
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
                "t10k-images-idx3-ubyte.gz": (
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
                "t10k-labels-idx1-ubyte.gz": (
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
            },
        ),
    )
)
_register(
    DatasetSpec(
        "fashion-mnist",
        "Fashion-MNIST, the official IDX files (60,000 train / 10,000 test)",
        784,
        10,
        "idx",
        _idx_files(
            "fashion-mnist",
            _FASHION_BASE,
            {
                "train-images-idx3-ubyte.gz": (
                    "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
                "train-labels-idx1-ubyte.gz": (
                    "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
                "t10k-images-idx3-ubyte.gz": (
                    "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
                "t10k-labels-idx1-ubyte.gz": (
                    "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
            },
        ),
    )
)

# The thesis used the first 600,000 rows of UCI HIGGS.csv (500k train, 100k test). UCI publishes no
# checksum for HIGGS.csv.gz, so instead of a SHA-256 the loader checks the first row against the
# published one and refuses a file with fewer than 600,000 rows.
HIGGS_FIRST_ROW_PREFIX = (1.0, 0.869293212890625, -0.6350818276405334, 0.2256902605295181)
HIGGS_ROWS = 600_000
HIGGS_TRAIN_ROWS = 500_000
_register(
    DatasetSpec(
        "higgs",
        "HIGGS, the first 600,000 rows of UCI HIGGS.csv (500,000 train / 100,000 test), as in the thesis",
        28,
        2,
        "higgs-600k",
        {
            "csv": FileSpec(
                "higgs/HIGGS.csv.gz",
                "https://archive.ics.uci.edu/ml/machine-learning-databases/00280/HIGGS.csv.gz",
                None,
                None,
            )
        },
    )
)
_register(
    DatasetSpec(
        "higgs-h2o-5k",
        "HIGGS sample: h2o-tutorials higgs_test_5k.csv (5,000 real events of unknown position in HIGGS.csv;"
        " first 5/6 train, last 1/6 test). NOT the thesis's rows",
        28,
        2,
        "higgs-sample",
        {
            "csv": FileSpec(
                "higgs-subsets/h2o-tutorials_higgs_test_5k.csv.gz",
                "https://raw.githubusercontent.com/h2oai/h2o-tutorials/050c224193391995b842c50709314a2d60c3ef0a"
                "/tutorials/data/higgs_test_5k.csv",
                "446ff096f68ae068d52185d05b80931ce7c2049cfd629a0f356e95ffd5c7bba5",
                1281203,
                checksum_of="content",
            )
        },
        comparable_with_thesis=False,
    )
)
_register(
    DatasetSpec(
        "higgs-sas-11k",
        "HIGGS sample: sas-viya-workbench-examples higgs.csv (10,984 events, a 0.1% random sample of all of"
        " HIGGS; first 5/6 train, last 1/6 test). NOT the thesis's rows",
        28,
        2,
        "higgs-sample",
        {
            "csv": FileSpec(
                "higgs-subsets/sas-viya-workbench-examples_higgs.csv.gz",
                "https://raw.githubusercontent.com/sassoftware/sas-viya-workbench-examples"
                "/f180274bbf5d5cfc3598cfa2696780a4c228ab4d/data/higgs.csv",
                "21f8b95e4aaed9e631a76d69c724bb0ca94456bc1ac01e18fd81b968dd3c9724",
                1487585,
                checksum_of="content",
            )
        },
        comparable_with_thesis=False,
    )
)

DATASET_NAMES = tuple(DATASETS)
